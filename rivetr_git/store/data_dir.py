"""The data dir is private to the server's user: 0700, and nothing in it readable by others.

It holds the database (SSH keys, encrypted env, deployment logs), the master key, the host
key and every app's repository. `make_private` runs before anything is written there, at
the start of `serve` and of the local commands that open the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
_CHECKED_ELSEWHERE = frozenset({"master.key"})  # crypto.py refuses it when open


def make_private(data_dir: Path) -> None:
    """Set the process umask to 0o077 (whatever is created from now on is the user's alone),
    create `data_dir` 0700, and fix an existing one made by an older version or by hand:
    the dir 0700 and each entry at its top level without group/other bits.

    Only the top level is fixed: with the dir itself 0700, no other user can reach anything
    beneath it, whatever the modes further down; walking every repository and log on each
    start would cost time on a big server for nothing. What sits at the top level (the
    database and its -wal/-shm, master.key, the host key, repos/, logs/, tmp/) loses its
    group/other bits so that it stays private when moved or copied out, e.g. to a backup.
    A dir owned by someone else is left as it is, with a warning (a read-only command run
    by another user must not fail for it). The master key is not fixed either: a key that
    was open to others may have been read, so its own check refuses to start and says to
    rotate it, rather than this hiding that it happened.
    """
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        _restrict(data_dir, 0o700)
        with os.scandir(data_dir) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # e.g. a build dir just gone
                    if not entry.is_symlink() and entry.name not in _CHECKED_ELSEWHERE:
                        _restrict(Path(entry.path), None)
    except PermissionError as exc:
        log.warning(
            "cannot make the data dir %s private (%s); run as its owner, or chmod -R go-rwx %s",
            data_dir,
            exc.strerror,
            data_dir,
        )


def _restrict(path: Path, mode: int | None) -> None:
    """chmod `path` to `mode`, or (None) take away its group/other bits; only if needed."""
    current = stat.S_IMODE(path.lstat().st_mode)
    wanted = mode if mode is not None else current & ~0o077
    if wanted != current:
        path.chmod(wanted)
