"""The renewal task: keeps every automatic certificate fresh, in the background.

At start-up and then about hourly (with jitter, so many servers do not hit the ACME server
in step) it orders a certificate for each app with automatic certificates that has none,
has under 30 days left, or does not cover one of its hostnames. A failure leaves the
current certificate in service, is recorded (`certs APP` shows it), sends `cert.failed`,
and is retried with exponential backoff; a success sends `cert.renewed`. A certificate that
is still valid is never ordered again, so restarts cost the ACME server nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from rivetr_git.certificates.acme_client import AcmeFailed
from rivetr_git.certificates.manager import Certificates
from rivetr_git.models import App
from rivetr_git.proxy.tls.pem import utcnow
from rivetr_git.store.database import Store

log = logging.getLogger(__name__)

CHECK_INTERVAL = 3600.0
RETRY_FIRST = 300.0  # the first retry after a failure; doubles up to RETRY_MAX
RETRY_MAX = 6 * 3600.0


def retry_delay(failures: int) -> float:
    """Seconds before the next try after `failures` failures in a row (with jitter)."""
    base = min(RETRY_MAX, RETRY_FIRST * 2 ** max(0, failures - 1))
    return float(base * random.uniform(0.8, 1.2))


class Renewal:
    def __init__(self, certs: Certificates, store: Store, interval: float = CHECK_INTERVAL) -> None:
        self._certs = certs
        self._store = store
        self._interval = interval

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # one bad round must not end renewals for good
                log.exception("certificate check failed; trying again later")
            await asyncio.sleep(self._interval * random.uniform(0.9, 1.1))

    async def check(self) -> None:
        """One round: order what is due and not backing off, then republish (certificates
        that expired meanwhile leave the data planes)."""
        moment, wall = utcnow(), time.time()
        for record in await self._store.all_tls():
            if record.next_attempt is not None and record.next_attempt > wall:
                continue
            if await self._certs.due(record, moment):
                await self.renew(await self._store.get_app(record.app), record.failures)
        await self._certs.publish()

    async def renew(self, app: App, failures: int = 0) -> bool:
        """Order now; True on success. Failures are recorded and announced, not raised."""
        try:
            installed = await self._certs.issue(app)
        except AcmeFailed as exc:
            delay = retry_delay(failures + 1)
            log.warning(
                "certificate for %s not renewed: %s (next try in %.0f s)", app.name, exc, delay
            )
            await self._certs.failed(app, str(exc), delay)
            return False
        log.info(
            "certificate for %s renewed, valid until %s",
            app.name,
            installed.info.not_after.isoformat(),
        )
        self._certs.renewed(app, installed)
        return True
