"""The app tables of the Store: apps (their settings and state) and their custom domains."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiosqlite

from rivetr_git.errors import AlreadyExists, NotFound, RivetrError
from rivetr_git.models import App, SshKey
from rivetr_git.names import is_address, is_localhost
from rivetr_git.store.schema import columns, from_row, now

log = logging.getLogger(__name__)

_APP_COLUMNS = columns(App)
# Columns `update_app` may change (the others are managed by the pipeline).
APP_FIELDS = frozenset(
    {
        "scale",
        "deploy_branch",
        "dockerfile",
        "port",
        "health_path",
        "webhook_url",
        "memory_limit",
        "cpu_limit",
        "health_timeout",
        "health_interval",
        "health_retries",
        "health_start_period",
        "pre_deploy",
        "post_deploy",
        "deploy_command_timeout",
        "stopped",
        "build_type",
        "build_context",
        "build_target",
        "build_no_cache",
        "publish_dir",
        "compose_service",
        "build_env",
        "compose_binds",
        "auto_rollback",
        "live_check_interval",
    }
)


def _app(row: Sequence[Any]) -> App:
    return from_row(
        App,
        row,
        stopped=bool,
        build_no_cache=bool,
        auto_rollback=lambda v: None if v is None else bool(v),
    )


class AppTables:
    """Mixed into Store, whose connection and transactions it shares."""

    # Provided by Store.
    _db: aiosqlite.Connection
    _transaction: Callable[[], AbstractAsyncContextManager[None]]

    async def create_app(self, name: str) -> App:
        try:
            # A backing service's name is taken too: apps reach services by name.
            cur = await self._db.execute(
                "INSERT INTO apps (name, created_at) SELECT ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM services WHERE name = ?)",
                (name, now(), name),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"app '{name}' already exists") from None
        if cur.rowcount == 0:
            raise AlreadyExists(f"'{name}' is the name of a service; choose another app name")
        return await self.get_app(name)

    async def find_app(self, name: str) -> App | None:
        async with self._db.execute(
            f"SELECT {_APP_COLUMNS} FROM apps WHERE name = ?", (name,)
        ) as cur:
            row = await cur.fetchone()
        return _app(row) if row else None

    async def get_app(self, name: str) -> App:
        app = await self.find_app(name)
        if app is None:
            raise NotFound(f"no app named '{name}'; `rivetr-git apps list` shows them")
        return app

    async def list_apps(self) -> list[App]:
        async with self._db.execute(f"SELECT {_APP_COLUMNS} FROM apps ORDER BY name") as cur:
            return [_app(r) for r in await cur.fetchall()]

    async def update_app(self, name: str, **fields: Any) -> App:
        unknown = set(fields) - APP_FIELDS
        if unknown:
            raise RivetrError(f"unknown app fields: {sorted(unknown)}")
        app = await self.get_app(name)
        if fields:
            assignments = ", ".join(f"{k} = ?" for k in fields)
            await self._db.execute(
                f"UPDATE apps SET {assignments} WHERE id = ?", (*fields.values(), app.id)
            )
        return await self.get_app(name)

    async def delete_app(self, app: App) -> None:
        """Remove the app's rows; deployments, logs, grants and domains go with it (cascade)."""
        await self._db.execute("DELETE FROM apps WHERE id = ?", (app.id,))

    async def apps_visible_to(self, key: SshKey) -> list[App]:
        if key.is_admin:
            return await self.list_apps()
        async with self._db.execute(
            f"SELECT {', '.join('a.' + c.strip() for c in _APP_COLUMNS.split(','))} FROM apps a "
            "JOIN app_access g ON g.app_id = a.id WHERE g.key_id = ? ORDER BY a.name",
            (key.id,),
        ) as cur:
            return [_app(r) for r in await cur.fetchall()]

    async def set_crashed(self, app_id: int, reason: str | None) -> None:
        """Record that the app's live release keeps crashing (None: it no longer does)."""
        await self._db.execute("UPDATE apps SET crashed_reason = ? WHERE id = ?", (reason, app_id))

    async def add_domains(self, app: App, hosts: Sequence[str]) -> None:
        """Attach hostnames to `app`, all or none. A hostname belongs to one app at most."""
        async with self._transaction():
            for host in hosts:
                async with self._db.execute(
                    "SELECT a.name FROM app_domains d JOIN apps a ON a.id = d.app_id "
                    "WHERE d.host = ?",
                    (host,),
                ) as cur:
                    row = await cur.fetchone()
                if row is not None and row[0] != app.name:
                    raise AlreadyExists(
                        f"{host} is already a domain of another app; remove it "
                        "there first (domains:remove)"
                    )
                await self._db.execute(
                    "INSERT OR IGNORE INTO app_domains (host, app_id) VALUES (?, ?)", (host, app.id)
                )

    async def remove_domains(self, app: App, hosts: Sequence[str]) -> None:
        async with self._transaction():
            for host in hosts:
                cur = await self._db.execute(
                    "DELETE FROM app_domains WHERE host = ? AND app_id = ?", (host, app.id)
                )
                if cur.rowcount == 0:
                    raise NotFound(
                        f"{host} is not a domain of {app.name}; domains:list {app.name} shows them"
                    )

    async def domains(self, app: App) -> list[str]:
        async with self._db.execute(
            "SELECT host FROM app_domains WHERE app_id = ? ORDER BY host", (app.id,)
        ) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def all_domains(self) -> dict[str, str]:
        """Every custom hostname and the app it belongs to, but for addresses and localhost
        names that older versions accepted: they are not served (they would take over
        requests sent to the server by address), only logged until removed."""
        async with self._db.execute(
            "SELECT d.host, a.name FROM app_domains d JOIN apps a ON a.id = d.app_id"
        ) as cur:
            rows = await cur.fetchall()
        served = {}
        for host, app in rows:
            if is_address(host) or is_localhost(host):
                log.warning(
                    "domain %s of %s is not served (an address or localhost name); "
                    "domains:remove %s %s",
                    host,
                    app,
                    app,
                    host,
                )
            else:
                served[host] = app
        return served
