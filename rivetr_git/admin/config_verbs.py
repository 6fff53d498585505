"""The env var verbs: `config`, `config:get`, `config:set`, `config:unset`.

Values are decrypted only to be shown to a caller who asked (`--reveal`, `config:get`)
and otherwise never leave the env store; a change restarts the app with the new env
unless `--no-restart` is given.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable

from rivetr_git.admin.verbs import Invocation
from rivetr_git.models import App
from rivetr_git.secrets.env_vars import EnvVars, parse_assignments, validate_names

# (app, caller name, why) -> exit code of the restart, streamed to the session by the caller.
Restart = Callable[[App, str], Awaitable[int]]
Out = Callable[[str], Awaitable[None]]


class ConfigVerbs:
    def __init__(self, env: EnvVars) -> None:
        self._env = env

    async def show(self, inv: Invocation, app: App, out: Out) -> int:
        if inv.args.reveal:
            values = await self._env.reveal(app.name)
            for name, value in values.items():
                # Quoted for a POSIX shell, so multi-line values stay one entry.
                await out(f"{name}={shlex.quote(value)}")
            names = list(values)
        else:
            names = await self._env.names(app.name)
            for name in names:
                await out(name)
        if not names:
            await out(f"{app.name} has no env vars; config:set {app.name} NAME=VALUE adds one")
        return 0

    async def get(self, inv: Invocation, app: App, out: Out) -> int:
        await out(await self._env.get(app.name, inv.args.name))
        return 0

    async def set(self, inv: Invocation, app: App, out: Out, restart: Restart) -> int:
        values = parse_assignments(list(inv.args.assignments))
        await self._env.set(app.name, values)
        await out(f"set {', '.join(sorted(values))} on {app.name}")
        return await self._apply(inv, app, out, restart, "config:set")

    async def unset(self, inv: Invocation, app: App, out: Out, restart: Restart) -> int:
        names = validate_names(list(inv.args.names))
        await self._env.unset(app.name, names)
        await out(f"removed {', '.join(names)} from {app.name}")
        return await self._apply(inv, app, out, restart, "config:unset")

    async def _apply(self, inv: Invocation, app: App, out: Out, restart: Restart, why: str) -> int:
        if inv.args.no_restart:
            await out("stored; the next deploy or ps:restart uses it")
            return 0
        return await restart(app, why)
