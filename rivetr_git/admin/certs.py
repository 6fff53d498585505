"""The HTTPS verbs: `certs`, `certs:add`, `certs:remove`, `certs:auto:enable|disable`,
`certs:set`. Private keys are never shown; errors name what was wrong, not the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from rivetr_git import validate
from rivetr_git.admin import render
from rivetr_git.admin.app_settings import Fields, parse_assignments
from rivetr_git.admin.verbs import Invocation
from rivetr_git.certificates.manager import Certificates, Installed
from rivetr_git.certificates.renewal import Renewal
from rivetr_git.errors import NotFound, ValidationError
from rivetr_git.models import App
from rivetr_git.proxy.tls.pem import chain_info, utcnow


class Session(Protocol):
    """The part of admin.service.Session these verbs use (that module imports this one)."""

    async def out(self, line: str) -> None: ...

    async def read_input(self, limit: int) -> bytes: ...


Out = Callable[[str], Awaitable[None]]
_MAX_BUNDLE = 256 * 1024
_OFF = (
    "HTTPS is off on this server (https_port = 0); set https_port (e.g. 8443 or 443) and restart it"
)


def _redirect(raw: str) -> int | None:
    if raw == "":
        return None  # back to the server's https_redirect
    try:
        return int(validate.boolean(raw))
    except ValueError:
        raise ValidationError(f"redirect={raw!r}: expected true or false") from None


def _hsts(raw: str) -> int:
    try:
        return validate.count(raw or "0", 0, 2 * 365 * 86400)
    except ValueError:
        raise ValidationError(f"hsts={raw!r}: expected seconds, e.g. 31536000 (0: off)") from None


POLICY: Fields = {"redirect": ("redirect", _redirect), "hsts": ("hsts", _hsts)}


class CertVerbs:
    """`certs` is None when HTTPS is off: every verb then says how to turn it on."""

    def __init__(
        self, certs: Certificates | None, renewal: Renewal | None, https_redirect: bool
    ) -> None:
        self._certs = certs
        self._renewal = renewal
        self._default_redirect = https_redirect

    def handlers(self) -> dict[str, Callable[..., Awaitable[int]]]:
        return {
            "certs": self.show,
            "certs:add": self.add,
            "certs:remove": self.remove,
            "certs:auto:enable": self.auto_enable,
            "certs:auto:disable": self.auto_disable,
            "certs:set": self.set,
        }

    def _on(self) -> tuple[Certificates, Renewal]:
        if self._certs is None or self._renewal is None:
            raise ValidationError(_OFF)
        return self._certs, self._renewal

    async def show(self, inv: Invocation, app: App, caller: object, s: Session) -> int:
        certs, _ = self._on()
        out: Out = s.out
        record = await certs.store.tls_of(app)
        if record is not None and record.chain_pem is not None:
            info = chain_info(record.chain_pem.encode())
            row = (
                ", ".join(info.names),
                info.issuer,
                info.not_after.strftime("%Y-%m-%d %H:%M UTC"),
                "automatic" if record.source == "acme" else "uploaded",
            )
            await out(render.table([row], ("HOSTNAMES", "ISSUER", "NOT AFTER", "SOURCE")))
            missing = [h for h in await certs.hostnames(app) if not info.covers(h)]
            if missing:
                await out(f"not covered (served with the fallback): {', '.join(missing)}")
        else:
            await out(
                f"{app.name} has no certificate (certs:auto:enable {app.name} gets one, "
                f"certs:add {app.name} < bundle.pem installs yours)"
            )
        redirect = (
            self._default_redirect if record is None or record.redirect is None else record.redirect
        )
        await out(
            f"automatic: {'on' if record is not None and record.auto else 'off'}; "
            f"redirect: {'on' if redirect else 'off'}; "
            f"hsts: {record.hsts if record is not None else 0} s"
        )
        if record is not None and record.last_error:
            await out(
                f"last renewal error ({(record.last_error_at or '')[:19]}, "
                f"{record.failures} in a row): {record.last_error}"
            )
        return 0

    async def _say_installed(self, app: App, installed: Installed, out: Out) -> None:
        info = installed.info
        await out(
            f"{app.name} now serves a certificate for {', '.join(installed.covered)} "
            f"(issuer {info.issuer}, valid until "
            f"{info.not_after:%Y-%m-%d %H:%M} UTC)"
        )
        if installed.uncovered:
            await out(f"not covered (served with the fallback): {', '.join(installed.uncovered)}")

    async def add(self, inv: Invocation, app: App, caller: object, s: Session) -> int:
        certs, _ = self._on()
        data = await s.read_input(_MAX_BUNDLE)
        if not data.strip():
            raise ValidationError(
                f"send the certificate chain and its key on stdin, e.g. "
                f"cat fullchain.pem privkey.pem | ssh git@HOST certs:add "
                f"{app.name}"
            )
        installed = await certs.upload(app, data)
        await self._say_installed(app, installed, s.out)
        return 0

    async def remove(self, inv: Invocation, app: App, caller: object, s: Session) -> int:
        certs, _ = self._on()
        if not await certs.remove(app):
            raise NotFound(f"{app.name} has no certificate")
        await s.out(
            f"removed {app.name}'s certificate; it is served over "
            "plain HTTP only (HTTPS gets the fallback)"
        )
        return 0

    async def auto_enable(self, inv: Invocation, app: App, caller: object, s: Session) -> int:
        certs, renewal = self._on()
        out: Out = s.out
        await certs.store.set_tls_policy(app, auto=1)
        names = await certs.hostnames(app)
        await out(f"ordering a certificate for {', '.join(names)} ...")
        if not await renewal.renew(app):
            record = await certs.store.tls_of(app)
            error = record.last_error if record is not None else "unknown error"
            raise ValidationError(
                f"no certificate yet: {error}\nautomatic certificates stay "
                "on; the order is retried with backoff (certs "
                f"{app.name} shows the state)"
            )
        record = await certs.store.tls_of(app)
        if record is not None and record.chain_pem is not None:
            info = chain_info(record.chain_pem.encode())
            await out(
                f"{app.name} now serves a certificate for {', '.join(info.names)} "
                f"(issuer {info.issuer}, valid until {info.not_after:%Y-%m-%d %H:%M} "
                "UTC); it is renewed automatically"
            )
        return 0

    async def auto_disable(self, inv: Invocation, app: App, caller: object, s: Session) -> int:
        certs, _ = self._on()
        await certs.store.set_tls_policy(app, auto=0)
        await s.out(
            f"automatic certificates off for {app.name}; the current certificate "
            "serves until it expires (certs:remove removes it now)"
        )
        return 0

    async def set(self, inv: Invocation, app: App, caller: object, s: Session) -> int:
        certs, _ = self._on()
        fields = parse_assignments(list(inv.args.assignments), POLICY)
        await certs.store.set_tls_policy(app, **fields)
        await certs.publish()
        await s.out(f"set {', '.join(sorted(fields))} for {app.name}")
        return 0

    async def forget(self) -> None:
        """After apps:destroy: its certificate (gone with the app) leaves the data planes."""
        if self._certs is not None:
            await self._certs.publish()

    async def domains_changed(self, app: App, out: Out) -> None:
        """After domains:add/remove: republish, and order a new certificate if automatic."""
        if self._certs is None or self._renewal is None:
            return
        await self._certs.publish()
        record = await self._certs.store.tls_of(app)
        if record is None or not await self._certs.due(record, utcnow()):
            return
        await out(
            "ordering a certificate that covers the new hostnames; the current one "
            "serves meanwhile ..."
        )
        if await self._renewal.renew(app, record.failures):
            await out("done: the new certificate is in service")
        else:
            record = await self._certs.store.tls_of(app)
            await out(
                f"not yet: {record.last_error if record else 'unknown error'} "
                "(retried with backoff)"
            )
