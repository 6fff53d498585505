"""The record verbs without the server: the local CLI's way to run them when it is down.

The admin service in the server runs every verb; while it is not running, the verbs that
need only the database (admin.records) run here instead, in-process, with the same access
rules and output. What the server would add (the bound proxy port in URLs) comes from the
settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from rivetr_git.admin import verbs
from rivetr_git.admin.dispatch import Caller, Session, dispatch
from rivetr_git.admin.records import Records
from rivetr_git.errors import NotFound, RivetrError, ServerNotRunning
from rivetr_git.models import App
from rivetr_git.pipeline import app_policy, repo_config
from rivetr_git.pipeline.app_url import app_url
from rivetr_git.pipeline.health import HealthPolicy
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.settings import Settings
from rivetr_git.store.data_dir import make_private
from rivetr_git.store.database import Store

RECORD_VERBS = frozenset(
    (
        "apps:list",
        "apps:info",
        "apps:set",
        "deploys",
        "deploys:log",
        "keys:add",
        "keys:list",
        "keys:remove",
        "access:grant",
        "access:revoke",
        "help",
    )
)


class StoredFacts:
    """The Deployer's view of an app, computed from the settings, database and repository.

    Mirrors Deployer.app_url and Deployer.health_in_force (the server's own answers); once
    the deployer is split, both can use one function.
    """

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store

    def app_url(self, app: str) -> str:
        return app_url(self._settings, RouteTable(self._settings.base_domain).hostname(app))

    def health_defaults(self) -> HealthPolicy:
        return app_policy.health_defaults(self._settings)

    async def health_in_force(self, app: App) -> HealthPolicy:
        from rivetr_git.store.repos import Repos  # pygit2: only apps:info pays for it

        current = await self._store.current_deployment(app)
        repo = repo_config.RepoConfig()
        if current is not None:
            with contextlib.suppress(RivetrError):
                repo = repo_config.parse(
                    await Repos(self._settings.repos_dir).read_file(
                        app.name, current.commit_sha, repo_config.FILE_NAME
                    )
                )
        return app_policy.health(
            self._settings, app, repo, current.build_type if current is not None else None
        )


async def run_offline(settings: Settings, argv: Sequence[str], session: Session) -> int:
    """Run a record verb on the database of `settings` as the local admin.

    Raises ServerNotRunning for any other verb (it needs the server), else what the verb
    raises; usage errors and help come first, without touching the database.
    """
    verb = verbs.parse(argv).verb
    if verb.name not in RECORD_VERBS:
        raise ServerNotRunning(
            f"the rivetr-git server is not running with data dir {settings.data_dir} "
            f"({verb.name} runs in it); start it with `rivetr-git serve`, or pass --data-dir"
        )
    if verb.name != "keys:add" and not settings.db_path.exists():
        # Only the first key may create the database: a typo'd data dir stays untouched.
        raise NotFound(
            f"{settings.data_dir} holds no rivetr-git data (no server has run with "
            "it); pass the server's --data-dir, or start one with `rivetr-git serve`"
        )
    make_private(settings.data_dir)  # keys:add may create the database
    store = await Store.open(settings.db_path)
    try:
        records = Records(settings, store, StoredFacts(settings, store))
        return await dispatch(
            store, records.handlers, records.app_handlers, argv, Caller(None), session
        )
    finally:
        await store.close()
