"""The services:* verbs (admin only): backing services next to the apps.

Linking and unlinking change an app's env, so the app is restarted through the same
zero-downtime path as config:set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from rivetr_git.admin.dispatch import Caller, Handler, Session, visible_app
from rivetr_git.admin.render import approx_size
from rivetr_git.admin.verbs import Invocation
from rivetr_git.errors import NotFound, ValidationError
from rivetr_git.models import App
from rivetr_git.pipeline.consoles import Terminal
from rivetr_git.services.backups import Backups, cron_schedule
from rivetr_git.services.kinds import KINDS, version_of
from rivetr_git.services.manager import Services, service_name
from rivetr_git.services.monitor import ServiceMonitor
from rivetr_git.store.database import Store

Restart = Callable[[App, Caller, Session, str], Awaitable[int]]
_CHUNK = 1 << 20


def _size(n: int | None) -> str:
    return "unknown" if n is None else approx_size(n)


async def _input_chunks(s: Session) -> AsyncIterator[bytes]:
    """The session's stdin as it arrives (SSH), or all of it at once (other edges)."""
    read_chunk = getattr(s, "read_chunk", None)
    if read_chunk is None:
        yield await s.read_input(1 << 34)
        return
    while chunk := await read_chunk():
        yield chunk


@dataclass(frozen=True)
class ServiceParts:
    """What the services:* verbs act on (the daemon makes them)."""

    services: Services
    backups: Backups
    monitor: ServiceMonitor | None = None


_VERBS = [
    "create",
    "list",
    "info",
    "logs",
    "link",
    "unlink",
    "expose",
    "unexpose",
    "destroy",
    "backup",
    "backups",
    "restore",
    "export",
    "import",
    "connect",
]


def unavailable() -> dict[str, Handler]:
    """Handlers for a server without services (tests of other parts)."""

    async def refuse(inv: Invocation, caller: Caller, s: Session) -> int:
        raise NotFound("this server runs no backing services")

    return {f"services:{verb}": refuse for verb in _VERBS}


class ServiceVerbs:
    def __init__(self, store: Store, parts: ServiceParts, restart: Restart) -> None:
        self._store = store
        self._services = parts.services
        self._files = parts.backups
        self._monitor = parts.monitor
        self._restart = restart

    async def app_destroyed(self, app: str) -> None:
        await self._services.app_destroyed(app)

    @property
    def handlers(self) -> dict[str, Handler]:
        return {f"services:{verb}": getattr(self, "_" + verb) for verb in _VERBS}

    async def _create(self, inv: Invocation, caller: Caller, s: Session) -> int:
        row = await self._services.create(inv.args.kind, inv.args.name, inv.args.version)
        await s.out(f"{row.name}: {row.kind} {version_of(row.image)} is running and healthy")
        await s.out(f"link it to an app: services:link {row.name} APP")
        return 0

    async def _list(self, inv: Invocation, caller: Caller, s: Session) -> int:
        rows = await self._store.list_services()
        if not rows:
            await s.out("no services; services:create KIND NAME starts one")
        for row in rows:
            apps = [link.app for link in await self._store.service_links(service=row.name)]
            await s.out(
                f"{row.name}  {row.kind} {version_of(row.image)}  "
                f"{await self._services.state(row)}  linked: {', '.join(apps) or '-'}"
            )
        return 0

    async def _info(self, inv: Invocation, caller: Caller, s: Session) -> int:
        row = await self._store.get_service(service_name(inv.args.name))
        links = await self._store.service_links(service=row.name)
        state = await self._services.state(row)
        if self._monitor is not None and row.name in self._monitor.given_up:
            state += ", crashed: no more restarts until the server restarts"
        restarts = self._monitor.restarts.get(row.name, 0) if self._monitor else 0
        schedule = row.backup_schedule or "none"
        lines = [
            f"name:      {row.name}",
            f"kind:      {row.kind} {version_of(row.image)} ({row.image})",
            f"state:     {state}, {restarts} restart(s)",
            f"volume:    {self._services.engine_name(row.name)}, "
            f"{_size(await self._services.volume_size(row.name))}",
            f"url:       {self._services.url(row, hidden=True)}",
            f"exposed:   {f'127.0.0.1:{row.host_port}' if row.host_port else 'no (private)'}",
            f"linked:    {', '.join(f'{x.app} ({x.env_name})' for x in links) or '-'}",
            f"backups:   {len(self._files.of(row.name))}, schedule {schedule}, "
            f"keep {row.backup_keep}",
        ]
        for line in lines:
            await s.out(line)
        return 0

    async def _logs(self, inv: Invocation, caller: Caller, s: Session) -> int:
        if inv.args.lines < 0:
            raise ValidationError("-n takes a number of lines, e.g. -n 200")
        name = service_name(inv.args.name)
        await self._services.logs(name, inv.args.lines, inv.args.follow, s.out_bytes)
        return 0

    async def _link(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        app = await visible_app(self._store, inv.args.app_name, caller)
        env_name = await self._services.link(name, app.name)
        await s.out(f"{name} linked to {app.name} as {env_name}; restarting {app.name}")
        return await self._restart(app, caller, s, f"services:link {name}")

    async def _unlink(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        app = await visible_app(self._store, inv.args.app_name, caller)
        env_name = await self._services.unlink(name, app.name)
        await s.out(f"{name} unlinked from {app.name} ({env_name} removed); restarting it")
        return await self._restart(app, caller, s, f"services:unlink {name}")

    async def _expose(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        port = await self._services.expose(name, inv.args.host_port)
        await s.out(f"{name} is published on 127.0.0.1:{port} (services:unexpose undoes it)")
        return 0

    async def _unexpose(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        await self._services.unexpose(name)
        await s.out(f"{name} is private: linked apps only")
        return 0

    async def _destroy(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        await self._store.get_service(name)
        if inv.args.confirm != name:
            raise ValidationError(
                f"destroying {name} removes its container (and with --purge-data its data); "
                f"confirm with: services:destroy {name} --confirm {name}"
            )
        links = await self._store.service_links(service=name)
        if links and not inv.args.force:
            apps = ", ".join(link.app for link in links)
            raise ValidationError(
                f"{name} is linked to {apps}; services:unlink them first, or add --force "
                "(they lose its URL and are restarted)"
            )
        for link in links:
            await self._unlink_for_destroy(name, link.app, caller, s)
        await self._services.destroy(name, inv.args.purge_data)
        kept = "" if inv.args.purge_data else f"; its volume {self._services.engine_name(name)} "
        await s.out(f"destroyed {name}{kept and kept + 'is kept (--purge-data removes it)'}")
        return 0

    async def _unlink_for_destroy(self, name: str, app: str, caller: Caller, s: Session) -> None:
        env_name = await self._services.unlink(name, app)
        await s.out(f"{name} unlinked from {app} ({env_name} removed)")
        await self._restart(await self._store.get_app(app), caller, s, f"services:destroy {name}")

    async def _backup(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        if inv.args.schedule is not None or inv.args.keep is not None:
            return await self._schedule(name, inv.args.schedule, inv.args.keep, s)
        made = await self._files.backup(name)
        await s.out(f"backed up {name}: {made.name} ({_size(made.size)}) in {made.path.parent}")
        return 0

    async def _schedule(self, name: str, schedule: str | None, keep: int | None, s: Session) -> int:
        row = await self._store.get_service(name)
        values: dict[str, object] = {}
        if schedule is not None:
            values["backup_schedule"] = cron_schedule(schedule) if schedule else None
        if keep is not None:
            if keep < 1:
                raise ValidationError("--keep takes a number of backups, at least 1")
            values["backup_keep"] = keep
        row = await self._store.update_service(row.name, **values)
        when = row.backup_schedule or "never (no schedule)"
        await s.out(f"{name} is backed up {when} (UTC), the newest {row.backup_keep} kept")
        return 0

    async def _backups(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        await self._store.get_service(name)
        found = self._files.of(name)
        if not found:
            await s.out(f"{name} has no backups; services:backup {name} makes one")
        for backup in found:
            await s.out(f"{backup.name}  {_size(backup.size)}")
        return 0

    async def _refuse_linked(self, name: str, force: bool, verb: str) -> None:
        links = await self._store.service_links(service=name)
        if links and not force:
            raise ValidationError(
                f"{name} is linked to {', '.join(x.app for x in links)}: {verb} replaces the "
                "data they use; add --force to do it anyway"
            )

    async def _restore(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        await self._store.get_service(name)
        await self._refuse_linked(name, inv.args.force, "a restore")
        await self._files.restore(name, inv.args.backup)
        await s.out(f"restored {name} from {inv.args.backup}")
        return 0

    async def _export(self, inv: Invocation, caller: Caller, s: Session) -> int:
        await self._files.dump(service_name(inv.args.name), s.out_bytes)
        return 0

    async def _import(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        await self._store.get_service(name)
        await self._refuse_linked(name, inv.args.force, "an import")
        await self._files.load(name, _input_chunks(s), "the input")
        await s.out(f"imported the dump into {name}")
        return 0

    async def _connect(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = service_name(inv.args.name)
        terminal = getattr(s, "terminal", None)
        if not isinstance(terminal, Terminal):
            kind = KINDS[(await self._store.get_service(name)).kind].name
            raise ValidationError(
                f"services:connect opens {kind}'s client on a terminal: use ssh -t git@HOST "
                f"services:connect {name}"
            )
        return await self._services.connect(name, terminal)
