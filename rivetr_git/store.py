"""The database: SQLite through aiosqlite, WAL mode, versioned migrations.

The database is the truth; in-memory state (routes, queues) is rebuilt from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from rivetr_git.errors import AlreadyExists, NotFound, RivetrError
from rivetr_git.models import App, Deployment, LogLine, Role, SshKey, Status
from rivetr_git.store_env import EnvTables
from rivetr_git.store_schema import MIGRATIONS
from rivetr_git.store_tls import TlsTables

__all__ = ["MIGRATIONS", "Store", "now"]

def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_DEPLOYMENT_COLUMNS = (
    "d.id, d.app_id, a.name, d.status, d.commit_sha, d.commit_message, d.image, d.container_id, "
    "d.host_port, d.error_message, d.created_at, d.finished_at, d.pushed_by, d.rollback_of, "
    "d.app_port, d.kind, d.post_deploy_error, d.build_type"
)


def _deployment(row: Sequence[Any]) -> Deployment:
    return Deployment(
        id=row[0], app_id=row[1], app_name=row[2], status=Status(row[3]), commit_sha=row[4],
        commit_message=row[5], image=row[6], container_id=row[7], host_port=row[8],
        error_message=row[9], created_at=row[10], finished_at=row[11], pushed_by=row[12],
        rollback_of=row[13], app_port=row[14], kind=row[15], post_deploy_error=row[16],
        build_type=row[17],
    )


def _app(row: Sequence[Any]) -> App:
    return App(
        id=row[0], name=row[1], created_at=row[2], deploy_branch=row[3], dockerfile=row[4],
        port=row[5], health_path=row[6], webhook_url=row[7], crashed_reason=row[8],
        memory_limit=row[9], cpu_limit=row[10], health_timeout=row[11], health_interval=row[12],
        health_retries=row[13], health_start_period=row[14], pre_deploy=row[15],
        post_deploy=row[16], deploy_command_timeout=row[17], stopped=bool(row[18]),
        build_type=row[19], build_context=row[20], build_target=row[21],
        build_no_cache=bool(row[22]), publish_dir=row[23], compose_service=row[24],
        build_env=row[25], compose_binds=row[26],
    )


def _key(row: Sequence[Any]) -> SshKey:
    return SshKey(
        id=row[0], name=row[1], fingerprint=row[2], public_key=row[3], role=Role(row[4]),
        created_at=row[5],
    )


_APP_COLUMNS = (
    "id, name, created_at, deploy_branch, dockerfile, port, health_path, webhook_url, "
    "crashed_reason, memory_limit, cpu_limit, health_timeout, health_interval, health_retries, "
    "health_start_period, pre_deploy, post_deploy, deploy_command_timeout, stopped, "
    "build_type, build_context, build_target, build_no_cache, publish_dir, compose_service, "
    "build_env, compose_binds"
)
# Columns `update_app` may change (the others are managed by the pipeline).
APP_FIELDS = frozenset({
    "deploy_branch", "dockerfile", "port", "health_path", "webhook_url", "memory_limit",
    "cpu_limit", "health_timeout", "health_interval", "health_retries", "health_start_period",
    "pre_deploy", "post_deploy", "deploy_command_timeout", "stopped",
    "build_type", "build_context", "build_target", "build_no_cache", "publish_dir",
    "compose_service", "build_env", "compose_binds",
})
_KEY_COLUMNS = "id, name, fingerprint, public_key, role, created_at"


class Store(EnvTables, TlsTables):
    """Async access to the database. Use `await Store.open(path)` and `await store.close()`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection is shared by all coroutines: explicit transactions take turns.
        self._tx_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        async with self._tx_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise RivetrError(f"cannot open database {path}: {exc}") from None
        store = cls(db)
        try:
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA synchronous=NORMAL")
            await store._migrate()
        except sqlite3.Error as exc:
            await db.close()
            raise RivetrError(f"cannot use database {path}: {exc}") from None
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise RivetrError(
                f"database schema version {version} is newer than this rivetr-git "
                f"({len(MIGRATIONS)}); upgrade rivetr-git"
            )
        for i in range(version, len(MIGRATIONS)):
            # executescript commits; the version bump is part of the same script.
            await self._db.executescript(
                f"BEGIN; {MIGRATIONS[i]}; PRAGMA user_version = {i + 1}; COMMIT;"
            )

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # --- keys -------------------------------------------------------------------------------

    async def add_key(self, name: str, fingerprint: str, public_key: str, role: Role) -> SshKey:
        try:
            await self._db.execute(
                "INSERT INTO ssh_keys (name, fingerprint, public_key, role, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, fingerprint, public_key, role.value, now()),
            )
        except sqlite3.IntegrityError:
            existing = await self.key_by_fingerprint(fingerprint)
            if existing is not None:
                raise AlreadyExists(
                    f"this public key is already registered as '{existing.name}'"
                ) from None
            raise AlreadyExists(
                f"a key named '{name}' already exists; remove it first or pick another name"
            ) from None
        return await self.get_key(name)

    async def get_key(self, name: str) -> SshKey:
        async with self._db.execute(
            f"SELECT {_KEY_COLUMNS} FROM ssh_keys WHERE name = ?", (name,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no key named '{name}'; `rivetr-git keys list` shows them")
        return _key(row)

    async def key_by_fingerprint(self, fingerprint: str) -> SshKey | None:
        async with self._db.execute(
            f"SELECT {_KEY_COLUMNS} FROM ssh_keys WHERE fingerprint = ?", (fingerprint,)
        ) as cur:
            row = await cur.fetchone()
        return _key(row) if row else None

    async def list_keys(self) -> list[SshKey]:
        async with self._db.execute(f"SELECT {_KEY_COLUMNS} FROM ssh_keys ORDER BY name") as cur:
            return [_key(r) for r in await cur.fetchall()]

    async def remove_key(self, name: str) -> None:
        cur = await self._db.execute("DELETE FROM ssh_keys WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise NotFound(f"no key named '{name}'; `rivetr-git keys list` shows them")

    async def grant(self, key_name: str, app_name: str) -> None:
        key = await self.get_key(key_name)
        app = await self.get_app(app_name)
        await self._db.execute(
            "INSERT OR IGNORE INTO app_access (key_id, app_id) VALUES (?, ?)", (key.id, app.id)
        )

    async def has_access(self, key: SshKey, app: App) -> bool:
        if key.is_admin:
            return True
        async with self._db.execute(
            "SELECT 1 FROM app_access WHERE key_id = ? AND app_id = ?", (key.id, app.id)
        ) as cur:
            return await cur.fetchone() is not None

    # --- apps -------------------------------------------------------------------------------

    async def create_app(self, name: str) -> App:
        try:
            await self._db.execute(
                "INSERT INTO apps (name, created_at) VALUES (?, ?)", (name, now())
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"app '{name}' already exists") from None
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

    async def revoke(self, key_name: str, app_name: str) -> None:
        key = await self.get_key(key_name)
        app = await self.get_app(app_name)
        cur = await self._db.execute(
            "DELETE FROM app_access WHERE key_id = ? AND app_id = ?", (key.id, app.id))
        if cur.rowcount == 0:
            raise NotFound(f"key '{key_name}' has no grant for '{app_name}'")

    async def apps_visible_to(self, key: SshKey) -> list[App]:
        if key.is_admin:
            return await self.list_apps()
        async with self._db.execute(
            f"SELECT {', '.join('a.' + c.strip() for c in _APP_COLUMNS.split(','))} FROM apps a "
            "JOIN app_access g ON g.app_id = a.id WHERE g.key_id = ? ORDER BY a.name",
            (key.id,),
        ) as cur:
            return [_app(r) for r in await cur.fetchall()]

    # --- domains ----------------------------------------------------------------------------

    async def add_domains(self, app: App, hosts: Sequence[str]) -> None:
        """Attach hostnames to `app`, all or none. A hostname belongs to one app at most."""
        async with self._transaction():
            for host in hosts:
                async with self._db.execute(
                    "SELECT a.name FROM app_domains d JOIN apps a ON a.id = d.app_id "
                    "WHERE d.host = ?", (host,)) as cur:
                    row = await cur.fetchone()
                if row is not None and row[0] != app.name:
                    raise AlreadyExists(f"{host} is already a domain of another app; remove it "
                                        "there first (domains:remove)")
                await self._db.execute(
                    "INSERT OR IGNORE INTO app_domains (host, app_id) VALUES (?, ?)",
                    (host, app.id))

    async def remove_domains(self, app: App, hosts: Sequence[str]) -> None:
        async with self._transaction():
            for host in hosts:
                cur = await self._db.execute(
                    "DELETE FROM app_domains WHERE host = ? AND app_id = ?", (host, app.id))
                if cur.rowcount == 0:
                    raise NotFound(f"{host} is not a domain of {app.name}; domains:list "
                                   f"{app.name} shows them")

    async def domains(self, app: App) -> list[str]:
        async with self._db.execute(
            "SELECT host FROM app_domains WHERE app_id = ? ORDER BY host", (app.id,)) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def all_domains(self) -> dict[str, str]:
        """Every custom hostname and the app it belongs to."""
        async with self._db.execute(
            "SELECT d.host, a.name FROM app_domains d JOIN apps a ON a.id = d.app_id") as cur:
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def set_crashed(self, app_id: int, reason: str | None) -> None:
        """Record that the app's live release keeps crashing (None: it no longer does)."""
        await self._db.execute("UPDATE apps SET crashed_reason = ? WHERE id = ?",
                               (reason, app_id))

    # --- deployments ------------------------------------------------------------------------

    async def create_deployment(
        self, app: App, commit_sha: str, commit_message: str, pushed_by: str | None,
        rollback_of: Deployment | None = None, kind: str | None = None,
    ) -> Deployment:
        """A pending deployment with a copy of the env it runs with. A rollback or restart
        (`kind`) starts with the image of the release it runs again (`rollback_of`); a
        rollback also gets that release's env, everything else the app's env now."""
        if kind is None:
            kind = "rollback" if rollback_of is not None else "push"
        async with self._transaction():
            cur = await self._db.execute(
                "INSERT INTO deployments (app_id, status, commit_sha, commit_message, pushed_by, "
                "created_at, image, rollback_of, app_port, kind, build_type) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (app.id, Status.PENDING.value, commit_sha, commit_message, pushed_by, now(),
                 rollback_of.image if rollback_of else None,
                 rollback_of.id if rollback_of else None,
                 rollback_of.app_port if rollback_of else None, kind,
                 rollback_of.build_type if rollback_of else None),
            )
            assert cur.lastrowid is not None  # sqlite always sets it after an INSERT
            if rollback_of is not None and kind == "rollback":
                await self._db.execute(
                    "INSERT INTO deployment_env (deployment_id, name, value) "
                    "SELECT ?, name, value FROM deployment_env WHERE deployment_id = ?",
                    (cur.lastrowid, rollback_of.id))
            else:
                await self._copy_env(app.id, cur.lastrowid)
        return await self.get_deployment(cur.lastrowid)

    async def get_deployment(self, deployment_id: int) -> Deployment:
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            "WHERE d.id = ?",
            (deployment_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no deployment #{deployment_id}")
        return _deployment(row)

    async def list_deployments(self, app: App, limit: int = 50) -> list[Deployment]:
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            "WHERE d.app_id = ? ORDER BY d.id DESC LIMIT ?",
            (app.id, limit),
        ) as cur:
            return [_deployment(r) for r in await cur.fetchall()]

    async def deployments_with_status(self, statuses: Iterable[Status]) -> list[Deployment]:
        wanted = [s.value for s in statuses]
        marks = ", ".join("?" * len(wanted))
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            f"WHERE d.status IN ({marks}) ORDER BY d.id",
            wanted,
        ) as cur:
            return [_deployment(r) for r in await cur.fetchall()]

    async def releases(self, app: App, limit: int = 50) -> list[Deployment]:
        """Deployments of `app` that went live (the live one first if it is the newest)."""
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            "WHERE d.app_id = ? AND d.status IN (?, ?) AND d.image IS NOT NULL "
            "ORDER BY d.id DESC LIMIT ?",
            (app.id, Status.RUNNING.value, Status.REPLACED.value, limit),
        ) as cur:
            return [_deployment(r) for r in await cur.fetchall()]

    async def current_deployment(self, app: App) -> Deployment | None:
        """The deployment that is live for `app`, if any."""
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            "WHERE d.app_id = ? AND d.status = ? ORDER BY d.id DESC LIMIT 1",
            (app.id, Status.RUNNING.value),
        ) as cur:
            row = await cur.fetchone()
        return _deployment(row) if row else None

    async def set_status(self, deployment_id: int, status: Status, **fields: Any) -> None:
        allowed = {"image", "container_id", "host_port", "error_message", "app_port",
                   "post_deploy_error", "build_type"}
        unknown = set(fields) - allowed
        if unknown:
            raise RivetrError(f"unknown deployment fields: {sorted(unknown)}")
        values: dict[str, Any] = {"status": status.value, **fields}
        if not status.in_flight:
            values["finished_at"] = now()
        assignments = ", ".join(f"{k} = ?" for k in values)
        await self._db.execute(
            f"UPDATE deployments SET {assignments} WHERE id = ?", (*values.values(), deployment_id)
        )

    async def promote(self, deployment_id: int, app_id: int) -> None:
        """Mark `deployment_id` running and the app's previous running release replaced."""
        async with self._transaction():
            await self._db.execute(
                "UPDATE deployments SET status = ?, finished_at = COALESCE(finished_at, ?) "
                "WHERE app_id = ? AND status = ? AND id != ?",
                (Status.REPLACED.value, now(), app_id, Status.RUNNING.value, deployment_id),
            )
            await self._db.execute(
                "UPDATE deployments SET status = ?, finished_at = ? WHERE id = ?",
                (Status.RUNNING.value, now(), deployment_id),
            )
            # A new live release starts with a clean slate.
            await self._db.execute(
                "UPDATE apps SET crashed_reason = NULL, stopped = 0 WHERE id = ?", (app_id,))

    # --- logs -------------------------------------------------------------------------------

    async def append_logs(self, deployment_id: int, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        async with self._transaction():
            await self._db.executemany(
                "INSERT INTO deployment_logs (deployment_id, at, stage, stream, line) "
                "VALUES (?, ?, ?, ?, ?)",
                [(deployment_id, ln.at, ln.stage, ln.stream, ln.line) for ln in lines],
            )

    async def get_logs(self, deployment_id: int) -> list[LogLine]:
        await self.get_deployment(deployment_id)
        async with self._db.execute(
            "SELECT at, stage, stream, line FROM deployment_logs WHERE deployment_id = ? "
            "ORDER BY id",
            (deployment_id,),
        ) as cur:
            return [LogLine(*r) for r in await cur.fetchall()]
