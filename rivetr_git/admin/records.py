"""The record verbs: apps, deployments, keys and access, as stored in the database.

They need the database (and, for `apps:info`, the app's repository) but no running part
of the server, so the local CLI runs them in-process when the server is down (`keys add`
before the first start, `apps list`, `deploys list`, `logs ID`); when it runs, they run in
it, like every other verb. Either way the output is rendered here, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from rivetr_git.admin import render
from rivetr_git.admin.app_settings import APPS_SET, parse_assignments
from rivetr_git.admin.dispatch import AppHandler, Caller, Handler, Session, visible_app
from rivetr_git.admin.ssh_keys import parse_public_key
from rivetr_git.admin.verbs import Invocation
from rivetr_git.errors import NotFound, ValidationError
from rivetr_git.models import App, Role
from rivetr_git.names import validate_app_name, validate_key_name
from rivetr_git.pipeline.health import HealthPolicy
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.terminal import neutralise


class Facts(Protocol):
    """What the record verbs show about an app beyond its row (the Deployer in the server)."""

    def app_url(self, app: str) -> str: ...

    def health_defaults(self) -> HealthPolicy: ...

    async def health_in_force(self, app: App) -> HealthPolicy: ...


class Records:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        facts: Facts,
        repo_size: Callable[[str], Awaitable[int]] | None = None,
    ) -> None:
        self._settings = settings
        self._repo_size = repo_size
        self._store = store
        self._facts = facts
        self.handlers: dict[str, Handler] = {
            "apps:list": self._apps_list,
            "apps:set": self._apps_set,
            "deploys:log": self._deploy_log,
            "keys:add": self._keys_add,
            "keys:list": self._keys_list,
            "keys:remove": self._keys_remove,
            "access:grant": self._access_grant,
            "access:revoke": self._access_revoke,
        }
        self.app_handlers: dict[str, AppHandler] = {
            "apps:info": self._apps_info,
            "deploys": self._deploys,
        }

    # --- apps --------------------------------------------------------------------------------

    async def _apps_list(self, inv: Invocation, caller: Caller, s: Session) -> int:
        apps = (
            await self._store.list_apps()
            if caller.key is None
            else await self._store.apps_visible_to(caller.key)
        )
        apps = [a for a in apps if await caller.may_see(self._store, a)]
        if not apps:
            await s.out("no apps yet; `apps:create NAME` or an admin key's first push makes one")
            return 0
        rows = []
        for a in apps:
            current = await self._store.current_deployment(a)
            live = f"#{current.id} {current.commit_sha[:7]}" if current else "-"
            rows.append(
                (a.name, live, state(a, current is not None)[0], self._facts.app_url(a.name))
            )
        await s.out(render.table(rows, ("APP", "LIVE", "STATE", "URL")))
        return 0

    async def _branch_line(self, app: App) -> str:
        """The deploy branch, and the git host it is fetched from (if any)."""
        branch = app.deploy_branch or self._settings.deploy_branch
        source = await self._store.git_source(app)
        return branch if source is None else f"{branch} (from git host {source.url})"

    async def _apps_info(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        current = await self._store.current_deployment(app)
        defaults = self._facts.health_defaults()
        used = await self._facts.health_in_force(app)

        word, why = state(app, current is not None)
        live = "nothing deployed"
        if current:
            live = (
                f'#{current.id} {current.commit_sha[:7]} "{current.commit_message[:50]}" '
                f"on 127.0.0.1:{current.host_port}"
            )
        build = {
            "dockerfile": app.dockerfile if app.dockerfile != "Dockerfile" else None,
            "context": app.build_context,
            "target": app.build_target,
            "no_cache": "true" if app.build_no_cache else None,
            "publish_dir": app.publish_dir,
            "compose_service": app.compose_service,
        }
        size = render.approx_size(await self._repo_size(app.name)) if self._repo_size else "-"
        lines = [
            f"app:            {app.name}",
            f"url:            {self._facts.app_url(app.name)}",
            f"domains:        {', '.join(await self._store.domains(app)) or '-'}",
            f"state:          {word} ({why})" if why else f"state:          {word}",
            f"live:           {live}",
            f"deploy branch:  {await self._branch_line(app)}",
            f"repository:     {size} (pushes up to max_push_size "
            f"{self._settings.max_push_size or 'no limit'})",
            f"build:          {app.build_type or 'auto (detected on each push)'}"
            + "".join(f", {k} {v}" for k, v in build.items() if v),
            f"port:           {app.port if app.port is not None else 'image EXPOSE, else 5000'}",
            "limits:         memory "
            + (render.size(app.memory_limit) if app.memory_limit else "none")
            + ", cpu "
            + (f"{app.cpu_limit:g}" if app.cpu_limit is not None else "none"),
            "health check:   in force (app setting > rivetr.toml of the live commit > "
            "server default) [server default]",
            f"  path:         {used.path or repr('')} [{defaults.path or repr('')}]",
            f"  timeout:      {used.timeout:g}s [{defaults.timeout:g}s]",
            f"  interval:     {used.interval:g}s [{defaults.interval:g}s]",
            f"  retries:      {used.retries} [{defaults.retries}]",
            f"  start_period: {used.start_period:g}s [{defaults.start_period:g}s]",
            f"pre-deploy:     {_commands(app.pre_commands)}",
            f"post-deploy:    {_commands(app.post_commands)}",
            "auto-rollback:  " + shown(app.auto_rollback, self._settings.auto_rollback, ""),
            "command timeout: "
            + shown(app.deploy_command_timeout, self._settings.deploy_command_timeout, "s"),
            f"webhook:        {app.webhook_url or '-'}",
            "compose binds:  "
            + (app.compose_binds or "- (an admin allows one with compose:allow)"),
        ]
        if app.crashed_reason:
            lines.append(f"crashed:        {app.crashed_reason}")
        for line in lines:
            await s.out(neutralise(line))  # commit messages, crash reasons: not ours
        return 0

    async def _apps_set(self, inv: Invocation, caller: Caller, s: Session) -> int:
        # The values first: advice on a typo does not depend on the app existing.
        values = parse_assignments(inv.args.assignments, APPS_SET)
        app = await visible_app(self._store, inv.app or "", caller)
        await self._store.update_app(app.name, **values)
        await s.out(f"settings of {app.name} updated: {', '.join(values)}")
        await s.out("takes effect on the next deploy or ps:restart")
        return 0

    # --- deployments -------------------------------------------------------------------------

    async def _deploys(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        limit = inv.args.lines if inv.args.lines is not None else 20
        rows = [
            (
                f"#{d.id}",
                d.status.value,
                d.kind,
                d.commit_sha[:7],
                d.commit_message[:40],
                d.created_at[:19],
                d.pushed_by or "",
                d.error_message or d.post_deploy_error or "",
            )
            for d in await self._store.list_deployments(app, limit=max(limit, 1))
        ]
        await s.out(
            render.table(
                rows, ("ID", "STATUS", "KIND", "COMMIT", "MESSAGE", "CREATED", "BY", "ERROR")
            )
        )
        return 0

    async def _deploy_log(self, inv: Invocation, caller: Caller, s: Session) -> int:
        missing = NotFound(f"no deployment #{inv.args.deployment}; `deploys APP` lists them")
        try:
            deployment = await self._store.get_deployment(inv.args.deployment)
            await visible_app(self._store, deployment.app_name, caller)
        except NotFound:
            raise missing from None  # someone else's deployment reads like a missing one
        for line in await self._store.get_logs(deployment.id):
            await s.out(neutralise(line.line, keep_style=True))  # older rows are raw
        return 0

    # --- keys and access ---------------------------------------------------------------------

    async def _keys_add(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = validate_key_name(inv.args.name)
        text = (await s.read_input(64 * 1024)).decode("utf-8", "replace")
        if not text.strip():
            raise ValidationError(
                f"send the public key on stdin, e.g. ssh git@HOST keys:add {name} < {name}.pub"
            )
        key = parse_public_key(text)
        role = Role.ADMIN if inv.args.admin else Role.DEVELOPER
        await self._store.add_key(name, key.fingerprint, key.openssh, role)
        await s.out(f"added key '{name}' ({role.value}) {key.fingerprint}")
        return 0

    async def _keys_list(self, inv: Invocation, caller: Caller, s: Session) -> int:
        keys = await self._store.list_keys()
        if not keys:
            await s.out(
                "no keys; add one with `rivetr-git keys add NAME ~/.ssh/id_ed25519.pub --admin`"
            )
            return 0
        await s.out(
            render.table(
                [(k.name, k.role.value, k.fingerprint, k.created_at[:19]) for k in keys],
                ("NAME", "ROLE", "FINGERPRINT", "ADDED"),
            )
        )
        return 0

    async def _keys_remove(self, inv: Invocation, caller: Caller, s: Session) -> int:
        await self._store.remove_key(inv.args.name)
        await s.out(f"removed key '{inv.args.name}'; it stops working on its next command")
        return 0

    async def _access_grant(self, inv: Invocation, caller: Caller, s: Session) -> int:
        await self._store.grant(inv.args.key, validate_app_name(inv.args.app_name))
        await s.out(f"key '{inv.args.key}' may now push to and manage '{inv.args.app_name}'")
        return 0

    async def _access_revoke(self, inv: Invocation, caller: Caller, s: Session) -> int:
        await self._store.revoke(inv.args.key, validate_app_name(inv.args.app_name))
        await s.out(f"key '{inv.args.key}' no longer has access to '{inv.args.app_name}'")
        return 0


def state(app: App, deployed: bool) -> tuple[str, str]:
    """The app's state in one word, always named (blank would read as unknown), and why."""
    if app.stopped:
        return "stopped", "ps:start starts it"
    if app.crashed_reason:
        return "crashed", "the proxy answers 503 until the next deploy"
    return ("running", "") if deployed else ("created", "push to deploy")


def shown(value: object, default: object, unit: str = "") -> str:
    """An app setting, or the server's default it falls back to."""
    return f"{value}{unit}" if value is not None else f"{default}{unit} (default)"


def _commands(commands: tuple[str, ...] | None) -> str:
    """An app's deploy commands, in order (rivetr.toml's when it sets none)."""
    if commands is None:
        return "- (rivetr.toml [deploy], if any)"
    return " ; then ".join(repr(c) for c in commands) or "- (none, whatever rivetr.toml says)"
