"""Every app's certificate: uploaded or from ACME, stored encrypted, published to the proxy.

The database is the truth. `publish()` writes what the data planes need (proxy/tls/files.py:
the certificates that are valid now, for the app hostnames they cover, with each app's
redirect and HSTS policy) and tells the proxy to reload. Private keys are decrypted only to
be written 0600 into the TLS state dir, never logged or shown.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from rivetr_git.certificates import acme_client
from rivetr_git.errors import ValidationError
from rivetr_git.models import App
from rivetr_git.notify import Notifier
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.proxy.tls import files
from rivetr_git.proxy.tls.pem import CertInfo, chain_info, read_bundle, utcnow
from rivetr_git.secrets.crypto import Cipher
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store, now
from rivetr_git.store.tls import TlsRecord

log = logging.getLogger(__name__)

KEY_NAME = "tls-key"  # associated data of a certificate key: (app, KEY_NAME)
ACCOUNT_NAME = "acme-account"  # of the ACME account key: (directory URL, ACCOUNT_NAME)
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Installed:
    """What an upload or an order put in place, for the verb's output."""

    info: CertInfo
    covered: list[str]
    uncovered: list[str]


class Certificates:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        cipher: Cipher,
        routes: RouteTable,
        tls_dir: Path,
        reload: Callable[[], Awaitable[object]],
        notifier: Notifier | None = None,
    ) -> None:
        self._settings = settings
        self.store = store  # the verbs read the TLS tables too
        self._cipher = cipher
        self._routes = routes
        self.tls_dir = tls_dir
        self._reload = reload
        self._notifier = notifier
        self._locks: dict[int, asyncio.Lock] = {}  # one order per app at a time
        self._publishing = asyncio.Lock()

    def lock(self, app: App) -> asyncio.Lock:
        return self._locks.setdefault(app.id, asyncio.Lock())

    async def hostnames(self, app: App) -> list[str]:
        return [self._routes.hostname(app.name), *await self.store.domains(app)]

    async def publish(self, force: bool = False) -> None:
        """Write the valid certificates and policies for the data planes; reload them if
        anything changed (or `force`: at start-up, the data planes may have older files)."""
        async with self._publishing:
            entries = []
            moment = utcnow()
            for record in await self.store.all_tls():
                if record.chain_pem is None or record.key is None:
                    continue
                info = chain_info(record.chain_pem.encode())
                if not info.valid_at(moment):
                    continue
                app = await self.store.get_app(record.app)
                hosts = tuple(h for h in await self.hostnames(app) if info.covers(h))
                if not hosts:
                    continue
                key = self._cipher.decrypt(record.app, KEY_NAME, record.key).encode()
                redirect = (
                    self._settings.https_redirect if record.redirect is None else record.redirect
                )
                entries.append(
                    files.AppCert(
                        record.app, record.chain_pem.encode(), key, hosts, redirect, record.hsts
                    )
                )
            if await asyncio.to_thread(files.publish, self.tls_dir, entries) or force:
                await self._reload()

    async def _install(
        self, app: App, source: str, chain_pem: bytes, key_pem: bytes, info: CertInfo
    ) -> Installed:
        blob = self._cipher.encrypt(app.name, KEY_NAME, key_pem.decode())
        await self.store.put_certificate(
            app, source, chain_pem.decode(), blob, info.not_after.isoformat(), now()
        )
        await self.publish()
        hosts = await self.hostnames(app)
        return Installed(
            info, [h for h in hosts if info.covers(h)], [h for h in hosts if not info.covers(h)]
        )

    async def upload(self, app: App, data: bytes) -> Installed:
        """Check and install a PEM bundle; automatic renewal stops (the upload wins).

        Raises ValidationError for a bundle that cannot serve any of the app's hostnames."""
        bundle = read_bundle(data)
        hosts = await self.hostnames(app)
        if not any(bundle.info.covers(h) for h in hosts):
            raise ValidationError(
                f"the certificate is for {', '.join(bundle.info.names) or 'no DNS name'}, none "
                f"of {app.name}'s hostnames ({', '.join(hosts)}); add the domain first "
                f"(domains:add {app.name} HOST)"
            )
        async with self.lock(app):
            await self.store.set_tls_policy(app, auto=0)
            return await self._install(
                app, "uploaded", bundle.chain_pem, bundle.key_pem, bundle.info
            )

    async def remove(self, app: App) -> bool:
        async with self.lock(app):
            removed = await self.store.remove_certificate(app)
        await self.publish()
        return removed

    async def issue(self, app: App) -> Installed:
        """Order a certificate for all the app's hostnames now. Raises AcmeFailed."""
        s = self._settings
        async with self.lock(app):
            names = await self.hostnames(app)
            stored = await self.store.acme_account(s.acme_directory)
            account_key = (
                self._cipher.decrypt(s.acme_directory, ACCOUNT_NAME, stored[0]).encode()
                if stored
                else None
            )
            issued = await asyncio.to_thread(
                acme_client.order,
                s.acme_directory,
                s.acme_ca_bundle,
                s.acme_email,
                account_key,
                names,
                lambda token, text: files.put_challenge(self.tls_dir, token, text),
                lambda token: files.drop_challenge(self.tls_dir, token),
            )
            if stored is None or stored[1] != issued.account_uri:
                await self.store.save_acme_account(
                    s.acme_directory,
                    self._cipher.encrypt(
                        s.acme_directory, ACCOUNT_NAME, issued.account_key_pem.decode()
                    ),
                    issued.account_uri,
                )
            info = chain_info(issued.chain_pem)
            return await self._install(app, "acme", issued.chain_pem, issued.key_pem, info)

    async def failed(self, app: App, error: str, retry_in: float) -> int:
        """Record a failed order (the current certificate stays); failures in a row."""
        count = await self.store.record_tls_failure(app, error, now(), time.time() + retry_in)
        if self._notifier is not None:
            self._notifier.notify("cert.failed", app, reason=error, failures=count)
        return count

    def renewed(self, app: App, installed: Installed) -> None:
        if self._notifier is not None:
            self._notifier.notify(
                "cert.renewed",
                app,
                names=", ".join(installed.info.names),
                not_after=installed.info.not_after.isoformat(),
            )

    async def due(self, record: TlsRecord, moment: datetime.datetime) -> bool:
        """An automatic certificate is due: none yet, under 30 days left (minus a per-app
        jitter of up to 12 hours), or one of the app's hostnames is not covered."""
        if not record.auto:
            return False
        if record.chain_pem is None or record.source != "acme":
            return True
        info = chain_info(record.chain_pem.encode())
        stored_end = (
            datetime.datetime.fromisoformat(record.not_after)
            if record.not_after
            else info.not_after
        )
        spread = zlib.crc32(f"{record.app} {stored_end.isoformat()}".encode())
        jitter = datetime.timedelta(minutes=spread % 720)
        if min(stored_end, info.not_after) - moment < RENEW_BEFORE + jitter:
            return True
        app = await self.store.get_app(record.app)
        return not all(info.covers(h) for h in await self.hostnames(app))
