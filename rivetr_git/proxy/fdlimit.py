"""The open-file limit: raised to the hard limit at start-up, read back for sizing."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force.

    Shells and service managers often start processes with a soft limit of 1024 while the
    hard limit is far higher: every connection the proxy holds is a descriptor, so that
    soft limit is what one client flooding it would run into.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit the kernel caps
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return nofile_limit()


def nofile_limit(hard: bool = False) -> int:
    """The soft (or hard) RLIMIT_NOFILE; a very large number when unlimited."""
    value = resource.getrlimit(resource.RLIMIT_NOFILE)[1 if hard else 0]
    return value if value != resource.RLIM_INFINITY else 1 << 20
