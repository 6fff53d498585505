"""Who may run which verb: parse the argv, check the role, find the app and the caller's access.

Shared by the full admin service (in the server) and the record verbs run without it, so a
verb is refused the same way wherever it runs. Someone else's app answers exactly like a
missing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rivetr_git.admin import verbs
from rivetr_git.admin.verbs import Invocation
from rivetr_git.errors import AccessDenied, NotFound
from rivetr_git.models import App, SshKey
from rivetr_git.store.database import Store
from rivetr_git.store.git_tables import ApiToken


class Session(Protocol):
    """Where a command's output goes and its input comes from."""

    async def out(self, line: str) -> None: ...

    async def out_bytes(self, data: bytes) -> None: ...

    async def read_input(self, limit: int) -> bytes: ...


@dataclass(frozen=True)
class Caller:
    key: SshKey | None  # None: the server's own user (local CLI), or an API token
    token: ApiToken | None = None  # an HTTP API caller

    @property
    def is_admin(self) -> bool:
        if self.token is not None:
            return self.token.apps is None
        return self.key is None or self.key.is_admin

    @property
    def name(self) -> str:
        if self.token is not None:
            return f"token {self.token.name}"
        return self.key.name if self.key is not None else "local admin"

    async def may_see(self, store: Store, app: App) -> bool:
        if self.token is not None:
            return self.token.apps is None or app.name in self.token.apps
        return self.key is None or await store.has_access(self.key, app)


Handler = Callable[[Invocation, Caller, Session], Awaitable[int]]
AppHandler = Callable[[Invocation, App, Caller, Session], Awaitable[int]]  # its app exists


async def visible_app(store: Store, name: str, caller: Caller) -> App:
    """The app `name` if the caller may see it; NotFound otherwise (missing or not theirs)."""
    app = await store.find_app(name)
    if app is None or not await caller.may_see(store, app):
        raise NotFound(f"app '{name}' does not exist")
    return app


async def dispatch(
    store: Store,
    handlers: Mapping[str, Handler],
    app_handlers: Mapping[str, AppHandler],
    argv: Sequence[str],
    caller: Caller,
    session: Session,
) -> int:
    """Parse and run one command. Raises RivetrError (UsageHelp for help) for the edge."""
    invocation = verbs.parse(argv)
    verb = invocation.verb
    if verb.admin_only and not caller.is_admin:
        raise AccessDenied(f"{verb.name} is for admin keys only")
    handler = app_handlers.get(verb.name)
    if handler is None:
        return await handlers[verb.name](invocation, caller, session)
    app = await visible_app(store, invocation.app or "", caller)  # parse() sets it per app
    return await handler(invocation, app, caller, session)
