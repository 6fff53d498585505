"""Runs admin verbs for a caller: access checks first, then the verb, output as it happens.

Used by the SSH session (the caller is the key that signed) and by the local CLI through
the daemon's socket (the caller is the server's own user, an admin). Access is checked
against the database on every command, so a removed key or revoked grant takes effect at
once, and someone else's app answers exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from rivetr_git.admin import render, verbs
from rivetr_git.admin.certs import CertVerbs
from rivetr_git.admin.config_verbs import ConfigVerbs
from rivetr_git.admin.verbs import Invocation
from rivetr_git.app_config import (
    BUILDS,
    CHECKS,
    COMPOSE_ALLOW,
    DEPLOY_COMMANDS,
    LIMITS,
    parse_assignments,
)
from rivetr_git.env_vars import EnvVars
from rivetr_git.errors import AccessDenied, NotFound, ValidationError
from rivetr_git.keys import parse_public_key
from rivetr_git.models import App, Role, SshKey
from rivetr_git.names import validate_app_name, validate_key_name
from rivetr_git.pipeline.deployer import Deployer
from rivetr_git.pipeline.processes import Processes
from rivetr_git.pipeline.releases import ReleaseCommands, follow
from rivetr_git.proxy.routes import RouteTable, normalize_host
from rivetr_git.settings import Settings
from rivetr_git.store import Store


class Session(Protocol):
    """Where a command's output goes and its input comes from."""

    async def out(self, line: str) -> None: ...

    async def out_bytes(self, data: bytes) -> None: ...

    async def read_input(self, limit: int) -> bytes: ...


@dataclass(frozen=True)
class Caller:
    key: SshKey | None  # None: the server's own user, through the local CLI

    @property
    def is_admin(self) -> bool:
        return self.key is None or self.key.is_admin

    @property
    def name(self) -> str:
        return self.key.name if self.key is not None else "local admin"


Handler = Callable[[Invocation, Caller, Session], Awaitable[int]]
AppHandler = Callable[[Invocation, App, Caller, Session], Awaitable[int]]  # its app exists


class Admin:
    def __init__(self, settings: Settings, store: Store, deployer: Deployer,
                 processes: Processes, releases: ReleaseCommands, routes: RouteTable,
                 create_repo: Callable[[str], Awaitable[object]], env: EnvVars,
                 repo_size: Callable[[str], Awaitable[int]] | None = None,
                 certs: CertVerbs | None = None) -> None:
        self._settings = settings
        self._store = store
        self._deployer = deployer
        self._processes = processes
        self._releases = releases
        self._routes = routes
        self._create_repo = create_repo
        self._repo_size = repo_size
        self._config = ConfigVerbs(env)
        self._handlers: dict[str, Handler] = {
            "apps:list": self._apps_list, "apps:create": self._apps_create,
            "keys:add": self._keys_add, "keys:list": self._keys_list,
            "keys:remove": self._keys_remove,
            "access:grant": self._access_grant, "access:revoke": self._access_revoke,
        }
        self._app_handlers: dict[str, AppHandler] = {
            "apps:info": self._apps_info, "apps:destroy": self._apps_destroy,
            "limits:set": self._settings_verb, "checks:set": self._settings_verb,
            "compose:allow": self._settings_verb,
            "deploy:set": self._settings_verb, "builds:set": self._settings_verb,
            "domains:add": self._domains_add, "domains:remove": self._domains_remove,
            "domains:list": self._domains_list,
            "ps:restart": self._ps_restart, "ps:stop": self._ps_stop, "ps:start": self._ps_start,
            "logs": self._logs, "run": self._run, "deploys": self._deploys,
            "releases": self._release_verbs, "rollback": self._release_verbs,
            "config": self._config_verbs, "config:get": self._config_verbs,
            "config:set": self._config_verbs, "config:unset": self._config_verbs,
        }
        self._certs = certs or CertVerbs(None, None, settings.https_redirect)
        self._app_handlers.update(self._certs.handlers())
        missing = ({v.name for v in verbs.VERBS} - set(self._handlers) - set(self._app_handlers)
                   - {"help"})
        if missing:
            raise RuntimeError(f"verbs without a handler: {sorted(missing)}")

    async def run(self, argv: Sequence[str], caller: Caller, session: Session) -> int:
        """Parse and run one command. Raises RivetrError (UsageHelp for help) for the edge."""
        invocation = verbs.parse(argv)
        verb = invocation.verb
        if verb.admin_only and not caller.is_admin:
            raise AccessDenied(f"{verb.name} is for admin keys only")
        handler = self._app_handlers.get(verb.name)
        if handler is None:
            return await self._handlers[verb.name](invocation, caller, session)
        name = invocation.app or ""  # parse() sets it for every per-app verb
        app = await self._store.find_app(name)
        if app is None or (caller.key is not None
                           and not await self._store.has_access(caller.key, app)):
            raise NotFound(f"app '{name}' does not exist")
        return await handler(invocation, app, caller, session)

    # --- apps --------------------------------------------------------------------------------

    async def _apps_list(self, inv: Invocation, caller: Caller,
                         s: Session) -> int:
        apps = (await self._store.list_apps() if caller.key is None
                else await self._store.apps_visible_to(caller.key))
        if not apps:
            await s.out("no apps yet; `apps:create NAME` or an admin key's first push makes one")
            return 0
        rows = []
        for a in apps:
            current = await self._store.current_deployment(a)
            live = f"#{current.id} {current.commit_sha[:7]}" if current else "-"
            state = "stopped" if a.stopped else "crashed" if a.crashed_reason else ""
            rows.append((a.name, live, state, self._deployer.app_url(a.name)))
        await s.out(render.table(rows, ("APP", "LIVE", "STATE", "URL")))
        return 0

    async def _apps_create(self, inv: Invocation, caller: Caller,
                           s: Session) -> int:
        assert inv.app is not None
        created = await self._store.create_app(inv.app)
        await self._create_repo(created.name)
        await s.out(f"created {created.name}; push to it: git remote add rivetr "
                    f"ssh://git@HOST:{self._settings.ssh_port}/{created.name}")
        return 0

    async def _apps_info(self, inv: Invocation, app: App, caller: Caller,
                         s: Session) -> int:
        current = await self._store.current_deployment(app)
        defaults = self._deployer.health_defaults()
        used = await self._deployer.health_in_force(app)

        def shown(value: object, default: object, unit: str = "") -> str:
            return f"{value}{unit}" if value is not None else f"{default}{unit} (default)"

        lines = [
            f"app:            {app.name}",
            f"url:            {self._deployer.app_url(app.name)}",
            f"domains:        {', '.join(await self._store.domains(app)) or '-'}",
            f"state:          {_state(app, current is not None)}",
            "live:           " + (f"#{current.id} {current.commit_sha[:7]} "
                                   f"\"{current.commit_message[:50]}\" on 127.0.0.1:"
                                   f"{current.host_port}" if current else "nothing deployed"),
            f"deploy branch:  {app.deploy_branch or self._settings.deploy_branch}",
            "repository:     " + (render.approx_size(await self._repo_size(app.name))
                                  if self._repo_size else "-")
            + f" (pushes up to max_push_size {self._settings.max_push_size or 'no limit'})",
            f"build:          {app.build_type or 'auto (detected on each push)'}"
            + "".join(f", {k} {v}" for k, v in (
                ("dockerfile", app.dockerfile if app.dockerfile != "Dockerfile" else None),
                ("context", app.build_context), ("target", app.build_target),
                ("no_cache", "true" if app.build_no_cache else None),
                ("publish_dir", app.publish_dir), ("compose_service", app.compose_service),
            ) if v),
            f"port:           {app.port if app.port is not None else 'image EXPOSE, else 5000'}",
            "limits:         memory " + (render.size(app.memory_limit) if app.memory_limit
                                         else "none") + ", cpu " +
            (f"{app.cpu_limit:g}" if app.cpu_limit is not None else "none"),
            "health check:   in force (app setting > rivetr.toml of the live commit > "
            "server default) [server default]",
            f"  path:         {used.path or repr('')} [{defaults.path or repr('')}]",
            f"  timeout:      {used.timeout:g}s [{defaults.timeout:g}s]",
            f"  interval:     {used.interval:g}s [{defaults.interval:g}s]",
            f"  retries:      {used.retries} [{defaults.retries}]",
            f"  start_period: {used.start_period:g}s [{defaults.start_period:g}s]",
            f"pre-deploy:     {app.pre_deploy or '-'}",
            f"post-deploy:    {app.post_deploy or '-'}",
            "command timeout: " + shown(app.deploy_command_timeout,
                                        self._settings.deploy_command_timeout, "s"),
            f"webhook:        {app.webhook_url or '-'}",
            "compose binds:  " + (app.compose_binds or "- (an admin allows one with "
                                                        "compose:allow)"),
        ]
        if app.crashed_reason:
            lines.append(f"crashed:        {app.crashed_reason}")
        for line in lines:
            await s.out(line)
        return 0

    async def _apps_destroy(self, inv: Invocation, app: App, caller: Caller,
                            s: Session) -> int:
        if inv.args.confirm != app.name:
            raise ValidationError(
                f"destroying {app.name} removes its containers, images, repository, settings "
                f"and env for good; confirm with: apps:destroy {app.name} --confirm {app.name}")
        await self._deployer.destroy(app)
        await self._refresh_domains()
        await self._certs.forget()
        await s.out(f"destroyed {app.name}")
        return 0

    async def _settings_verb(self, inv: Invocation, app: App, caller: Caller,
                             s: Session) -> int:
        fields = {"limits:set": LIMITS, "checks:set": CHECKS, "deploy:set": DEPLOY_COMMANDS,
                  "builds:set": BUILDS, "compose:allow": COMPOSE_ALLOW}
        values = parse_assignments(inv.args.assignments, fields[inv.verb.name])
        await self._store.update_app(app.name, **values)
        await s.out(f"{inv.verb.name.partition(':')[0]} of {app.name} updated")
        if inv.verb.name == "limits:set":
            # Limits belong to containers: a fresh one applies them now.
            return await self._restart(app, caller, s, "new limits")
        await s.out("takes effect on the next deploy or ps:restart")
        return 0

    async def _config_verbs(self, inv: Invocation, app: App, caller: Caller,
                            s: Session) -> int:

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

    async def _domains_add(self, inv: Invocation, app: App, caller: Caller,
                           s: Session) -> int:
        hosts = [_hostname(h, self._routes) for h in inv.args.hosts]
        await self._store.add_domains(app, hosts)
        await self._refresh_domains()
        for host in hosts:
            await s.out(f"{app.name} is now served at {host}")
        await self._certs.domains_changed(app, s.out)
        return 0

    async def _domains_remove(self, inv: Invocation, app: App, caller: Caller,
                              s: Session) -> int:
        hosts = [normalize_host(h) for h in inv.args.hosts]
        await self._store.remove_domains(app, hosts)
        await self._refresh_domains()
        await self._certs.domains_changed(app, s.out)
        await s.out(f"removed {', '.join(hosts)} from {app.name}")
        return 0

    async def _domains_list(self, inv: Invocation, app: App, caller: Caller,
                            s: Session) -> int:
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

    async def _ps_restart(self, inv: Invocation, app: App, caller: Caller,
                          s: Session) -> int:
        if (await self._store.current_deployment(app)) is None:
            raise NotFound(f"{app.name} has nothing deployed yet; push to it first")
        return await self._restart(app, caller, s, "ps:restart")

    async def _ps_stop(self, inv: Invocation, app: App, caller: Caller,
                       s: Session) -> int:
        await s.out(await self._processes.stop(app))
        return 0

    async def _ps_start(self, inv: Invocation, app: App, caller: Caller,
                        s: Session) -> int:
        policy = await self._deployer.health_in_force(app)
        await s.out(await self._processes.start(app, self._routes.hostname(app.name), policy))
        return 0

    async def _logs(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        lines = inv.args.lines if inv.args.lines is not None else 100
        if lines < 0:
            raise ValidationError("-n takes a number of lines, e.g. -n 200")
        await self._processes.logs(app, lines, inv.args.follow, s.out_bytes)
        return 0

    async def _run(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        return await self._processes.run(app, list(inv.args.command), s.out_bytes)

    async def _deploys(self, inv: Invocation, app: App, caller: Caller,
                       s: Session) -> int:
        limit = inv.args.lines if inv.args.lines is not None else 20
        rows = [
            (f"#{d.id}", d.status.value, d.kind, d.commit_sha[:7], d.commit_message[:40],
             d.created_at[:19], d.pushed_by or "", d.error_message or d.post_deploy_error or "")
            for d in await self._store.list_deployments(app, limit=max(limit, 1))
        ]
        await s.out(render.table(rows, ("ID", "STATUS", "KIND", "COMMIT", "MESSAGE", "CREATED",
                                        "BY", "ERROR")))
        return 0

    async def _release_verbs(self, inv: Invocation, app: App, caller: Caller,
                             s: Session) -> int:
        if inv.verb.name == "releases":
            return await self._releases.releases(app, s.out)
        return await self._releases.rollback(app, inv.args.release, caller.name, s.out)

    # --- keys and access ---------------------------------------------------------------------

    async def _keys_add(self, inv: Invocation, caller: Caller,
                        s: Session) -> int:
        name = validate_key_name(inv.args.name)
        text = (await s.read_input(64 * 1024)).decode("utf-8", "replace")
        if not text.strip():
            raise ValidationError(f"send the public key on stdin, e.g. "
                                  f"ssh git@HOST keys:add {name} < {name}.pub")
        key = parse_public_key(text)
        role = Role.ADMIN if inv.args.admin else Role.DEVELOPER
        await self._store.add_key(name, key.fingerprint, key.openssh, role)
        await s.out(f"added key '{name}' ({role.value}) {key.fingerprint}")
        return 0

    async def _keys_list(self, inv: Invocation, caller: Caller,
                         s: Session) -> int:
        keys = await self._store.list_keys()
        await s.out(render.table([(k.name, k.role.value, k.fingerprint, k.created_at[:19])
                                  for k in keys], ("NAME", "ROLE", "FINGERPRINT", "ADDED")))
        return 0

    async def _keys_remove(self, inv: Invocation, caller: Caller,
                           s: Session) -> int:
        await self._store.remove_key(inv.args.name)
        await s.out(f"removed key '{inv.args.name}'; it stops working on its next command")
        return 0

    async def _access_grant(self, inv: Invocation, caller: Caller,
                            s: Session) -> int:
        await self._store.grant(inv.args.key, validate_app_name(inv.args.app_name))
        await s.out(f"key '{inv.args.key}' may now push to and manage '{inv.args.app_name}'")
        return 0

    async def _access_revoke(self, inv: Invocation, caller: Caller,
                             s: Session) -> int:
        await self._store.revoke(inv.args.key, validate_app_name(inv.args.app_name))
        await s.out(f"key '{inv.args.key}' no longer has access to '{inv.args.app_name}'")
        return 0


def _state(app: App, deployed: bool) -> str:
    if app.stopped:
        return "stopped (ps:start starts it)"
    if app.crashed_reason:
        return "crashed (the proxy answers 503 until the next deploy)"
    return "running" if deployed else "created (push to deploy)"


def _hostname(raw: str, routes: RouteTable) -> str:
    host = normalize_host(raw)
    labels = host.split(".")
    ok = len(labels) > 1 and len(host) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        and not label.startswith("-") and not label.endswith("-") for label in labels)
    if not ok or host != raw.lower().rstrip("."):
        raise ValidationError(f"{raw!r} is not a hostname; give one like www.example.com "
                              "(no scheme, port or path)")
    if host == routes.base_domain or host.endswith("." + routes.base_domain):
        raise ValidationError(f"{host} is under the server's base domain "
                              f"({routes.base_domain}), where app names are served already")
    return host
