"""Runs admin verbs for a caller: access checks first, then the verb, output as it happens.

Used by the SSH session (the caller is the key that signed) and by the local CLI through
the daemon's socket (the caller is the server's own user, an admin). Access is checked
(admin.dispatch) against the database on every command, so a removed key or revoked grant
takes effect at once. The record verbs (admin.records) also run without the server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence

from rivetr_git.admin import verbs
from rivetr_git.admin.app_settings import (
    BUILDS,
    CHECKS,
    COMPOSE_ALLOW,
    DEPLOY_COMMANDS,
    LIMITS,
    parse_assignments,
)
from rivetr_git.admin.certs import CertVerbs
from rivetr_git.admin.config_verbs import ConfigVerbs
from rivetr_git.admin.cron_verbs import CronVerbs
from rivetr_git.admin.dispatch import AppHandler, Caller, Handler, Session, dispatch
from rivetr_git.admin.git_verbs import GitVerbs, TokenVerbs
from rivetr_git.admin.notify_verbs import NotifyVerbs
from rivetr_git.admin.records import Records
from rivetr_git.admin.service_verbs import ServiceParts, ServiceVerbs, unavailable
from rivetr_git.admin.storage_verbs import StorageVerbs
from rivetr_git.admin.verbs import Invocation
from rivetr_git.errors import NotFound, ValidationError
from rivetr_git.models import App
from rivetr_git.names import validate_domain
from rivetr_git.pipeline import scale
from rivetr_git.pipeline.consoles import Consoles, Terminal, split_process
from rivetr_git.pipeline.deployer import Deployer
from rivetr_git.pipeline.mounts import Storage
from rivetr_git.pipeline.processes import Processes
from rivetr_git.pipeline.releases import ReleaseCommands, follow
from rivetr_git.proxy.routes import RouteTable, normalize_host
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.validate import branch, git_url

__all__ = ["Admin", "Caller", "Session"]  # Caller and Session live in dispatch


def _terminal_of(session: Session) -> Terminal | None:
    """The client's terminal, when the session has one (`ssh -t`)."""
    terminal = getattr(session, "terminal", None)
    return terminal if isinstance(terminal, Terminal) else None


class Admin:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        deployer: Deployer,
        processes: Processes,
        releases: ReleaseCommands,
        routes: RouteTable,
        create_repo: Callable[[str], Awaitable[object]],
        env: EnvVars,
        repo_size: Callable[[str], Awaitable[int]] | None = None,
        cron: CronVerbs | None = None,
        consoles: Consoles | None = None,
        certs: CertVerbs | None = None,
        *,
        storage: Storage,
        services: ServiceParts | None = None,
        git: GitVerbs,
        notify: NotifyVerbs,
    ) -> None:
        self._settings = settings
        self._store = store
        self._deployer = deployer
        self._processes = processes
        self._releases = releases
        self._routes = routes
        self._create_repo = create_repo
        self._config = ConfigVerbs(env)
        self._cron = cron
        self._consoles = consoles
        self._storage = storage
        self._git = git
        records = Records(settings, store, deployer, repo_size)
        self._services = ServiceVerbs(store, services, self._restart) if services else None
        self._handlers: dict[str, Handler] = {
            "apps:create": self._apps_create,
            **records.handlers,
            **(self._services.handlers if self._services else unavailable()),
            **TokenVerbs(store).handlers,
            **notify.handlers,
        }
        self._certs = certs or CertVerbs(None, None, settings.https_redirect)
        self._app_handlers: dict[str, AppHandler] = {
            **records.app_handlers,
            **StorageVerbs(storage).app_handlers,
            **git.app_handlers(),
            **self._certs.handlers(),
            **self._own_app_handlers(),
        }
        missing = (
            {v.name for v in verbs.VERBS} - set(self._handlers) - set(self._app_handlers) - {"help"}
        )
        if missing:
            raise RuntimeError(f"verbs without a handler: {sorted(missing)}")

    def _own_app_handlers(self) -> dict[str, AppHandler]:
        """The per-app verbs this class implements."""
        return {
            "apps:destroy": self._apps_destroy,
            "limits:set": self._settings_verb,
            "checks:set": self._settings_verb,
            "compose:allow": self._settings_verb,
            "deploy:set": self._settings_verb,
            "builds:set": self._settings_verb,
            "domains:add": self._domains_add,
            "domains:remove": self._domains_remove,
            "domains:list": self._domains_list,
            "deploys:cancel": self._deploys_cancel,
            "ps": self._ps,
            "ps:scale": self._ps_scale,
            "ps:restart": self._ps_restart,
            "ps:stop": self._ps_stop,
            "ps:start": self._ps_start,
            "logs": self._logs,
            "run": self._run,
            "cron:list": self._cron_list,
            "enter": self._enter,
            "releases": self._release_verbs,
            "rollback": self._release_verbs,
            "config": self._config_verbs,
            "config:get": self._config_verbs,
            "config:set": self._config_verbs,
            "config:unset": self._config_verbs,
        }

    async def run(self, argv: Sequence[str], caller: Caller, session: Session) -> int:
        """Parse and run one command. Raises RivetrError (UsageHelp for help) for the edge."""
        return await dispatch(
            self._store, self._handlers, self._app_handlers, argv, caller, session
        )

    # --- apps --------------------------------------------------------------------------------

    async def _apps_create(self, inv: Invocation, caller: Caller, s: Session) -> int:
        assert inv.app is not None
        url = inv.args.git
        if url is not None:
            try:
                git_url(url)  # before anything is made: a bad URL leaves nothing behind
                if inv.args.branch is not None:
                    branch(inv.args.branch)
            except ValueError as exc:
                raise ValidationError(f"--git/--branch: {exc}") from None
        elif inv.args.branch is not None:
            raise ValidationError("--branch goes with --git URL")
        created = await self._store.create_app(inv.app)
        await self._create_repo(created.name)
        if url is not None:
            await self._git.sources.configure(created, url, inv.args.branch, None)
            await s.out(
                f"created {created.name} from {url}; `deploy {created.name}` fetches and "
                f"deploys it (private repositories: git:set {created.name} token=... or "
                f"git:key {created.name}; webhooks: git:webhook {created.name})"
            )
            return 0
        await s.out(
            f"created {created.name}; push to it: git remote add rivetr "
            f"ssh://git@HOST:{self._settings.ssh_port}/{created.name}"
        )
        return 0

    async def _apps_destroy(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        if inv.args.confirm != app.name:
            raise ValidationError(
                f"destroying {app.name} removes its containers, images, repository, settings "
                f"and env for good; confirm with: apps:destroy {app.name} --confirm {app.name}"
            )
        if self._services is not None:
            await self._services.app_destroyed(app.name)  # they leave its network first
        await self._deployer.destroy(app)
        if self._cron is not None:
            self._cron.forget(app)
        await self._refresh_domains()
        await self._certs.forget()
        await s.out(f"destroyed {app.name}")
        await s.out(await self._storage.after_destroy(app.name, inv.args.purge_data))
        return 0

    async def _settings_verb(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        fields = {
            "limits:set": LIMITS,
            "checks:set": CHECKS,
            "deploy:set": DEPLOY_COMMANDS,
            "builds:set": BUILDS,
            "compose:allow": COMPOSE_ALLOW,
        }
        values = parse_assignments(inv.args.assignments, fields[inv.verb.name])
        await self._store.update_app(app.name, **values)
        await s.out(f"{inv.verb.name.partition(':')[0]} of {app.name} updated")
        if inv.verb.name == "limits:set":
            # Limits belong to containers: a fresh one applies them now.
            return await self._restart(app, caller, s, "new limits")
        await s.out("takes effect on the next deploy or ps:restart")
        return 0

    async def _config_verbs(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:

        async def restart(target: App, why: str) -> int:
            return await self._restart(target, caller, s, why)

        if inv.verb.name == "config":
            return await self._config.show(inv, app, s.out)
        if inv.verb.name == "config:get":
            return await self._config.get(inv, app, s.out)
        if inv.verb.name == "config:set":
            return await self._config.set(inv, app, s.out, restart)
        return await self._config.unset(inv, app, s.out, restart)

    # --- domains -----------------------------------------------------------------------------

    async def _domains_add(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        hosts = [validate_domain(h, self._routes.base_domain) for h in inv.args.hosts]
        await self._store.add_domains(app, hosts)
        await self._refresh_domains()
        for host in hosts:
            await s.out(f"{app.name} is now served at {host}")
        await self._certs.domains_changed(app, s.out)
        return 0

    async def _domains_remove(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        hosts = [normalize_host(h) for h in inv.args.hosts]
        await self._store.remove_domains(app, hosts)
        await self._refresh_domains()
        await self._certs.domains_changed(app, s.out)
        await s.out(f"removed {', '.join(hosts)} from {app.name}")
        return 0

    async def _domains_list(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        await s.out(self._routes.hostname(app.name) + "  (always)")
        for host in await self._store.domains(app):
            await s.out(host)
        return 0

    async def _refresh_domains(self) -> None:
        self._routes.set_domains(await self._store.all_domains())
        # Say "added" only once every proxy process (workers, nginx) serves the new names.
        await self._routes.wait_applied(10.0)

    # --- processes ---------------------------------------------------------------------------

    async def _restart(self, app: App, caller: Caller, s: Session, why: str) -> int:
        job = await self._deployer.restart(app, caller.name, why)
        if job is None:
            await s.out(f"{app.name} has nothing deployed yet: the next push uses this")
            return 0
        return await follow(job, s.out)

    async def _ps_restart(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        if (await self._store.current_deployment(app)) is None:
            raise NotFound(f"{app.name} has nothing deployed yet; push to it first")
        return await self._restart(app, caller, s, "ps:restart")

    async def _deploys_cancel(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        cancelled = await self._deployer.cancel(app, caller.name)
        if not cancelled:
            raise NotFound(
                f"no deploy of {app.name} is waiting or running before its switch; "
                f"`deploys {app.name}` lists them (a live one is undone with rollback)"
            )
        for d in cancelled:
            await s.out(f"deployment #{d.id} ({d.commit_sha[:7]}): {d.status}, {d.error_message}")
        return 0

    async def _ps(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        for line in await self._processes.ps(app):
            await s.out(line)
        return 0

    async def _ps_scale(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        current = await self._store.current_deployment(app)
        if current is not None and current.build_type == "compose":
            raise ValidationError(  # it would restart the group with one container each
                f"{app.name} is a compose app: it runs one container per service of its "
                "compose file, which ps:scale cannot scale; ps:restart restarts the group"
            )
        types = await self._deployer.process_types(app)
        counts = scale.parse_assignments(inv.args.assignments, types, app.name)
        merged = {**scale.parse_counts(app.scale), **counts}
        app = await self._store.update_app(app.name, scale=scale.format_counts(merged))
        shown = " ".join(f"{t}={scale.count_of(merged, t)}" for t in types)
        await s.out(f"scale of {app.name}: {shown}; rolling it out now")
        return await self._restart(app, caller, s, "ps:scale")

    async def _ps_stop(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        await s.out(await self._processes.stop(app))
        return 0

    async def _ps_start(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        policy = await self._deployer.health_in_force(app)
        await s.out(await self._processes.start(app, self._routes.hostname(app.name), policy))
        return 0

    async def _logs(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        lines = inv.args.lines if inv.args.lines is not None else 100
        if lines < 0:
            raise ValidationError("-n takes a number of lines, e.g. -n 200")
        if self._cron is None:
            await self._processes.logs(app, lines, inv.args.follow, s.out_bytes)
            return 0
        await self._cron.log_lines(app, lines, s.out)  # the cron jobs' lines come first
        async with (
            self._cron.following(app, s.out) if inv.args.follow else contextlib.nullcontext()
        ):
            await self._processes.logs(app, lines, inv.args.follow, s.out_bytes)
        return 0

    async def _cron_list(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        if self._cron is None:
            raise NotFound("this server runs no cron scheduler")
        return await self._cron.list(app, s.out)

    async def _run(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        terminal = _terminal_of(s)
        if terminal is not None and self._consoles is not None:
            return await self._consoles.run(app, list(inv.args.command), terminal)
        return await self._processes.run(app, list(inv.args.command), s.out_bytes)

    async def _enter(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        if self._consoles is None:
            raise NotFound("this server has no consoles")
        process, command = split_process(list(inv.args.command))
        return await self._consoles.enter(app, process, command, _terminal_of(s), s.out_bytes)

    async def _release_verbs(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        if inv.verb.name == "releases":
            return await self._releases.releases(app, s.out)
        return await self._releases.rollback(app, inv.args.release, caller.name, s.out)
