"""The database: SQLite through aiosqlite, WAL mode, versioned migrations.

The database is the truth; in-memory state (routes, queues) is rebuilt from it. `Store` is the
one object callers use; its tables are grouped by family in mixins (keys, apps, deployments,
env), which share its connection and transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite

from rivetr_git.errors import RivetrError
from rivetr_git.store.apps import AppTables
from rivetr_git.store.channels import ChannelTables
from rivetr_git.store.deployments import DeploymentTables
from rivetr_git.store.env_tables import EnvTables
from rivetr_git.store.git_tables import GitTables
from rivetr_git.store.keys import KeyTables
from rivetr_git.store.mounts import MountTables
from rivetr_git.store.retention import RetentionTables
from rivetr_git.store.schema import MIGRATIONS, now
from rivetr_git.store.services import ServiceTables
from rivetr_git.store.tls import TlsTables

__all__ = ["MIGRATIONS", "Store", "now"]


class Store(
    AppTables,
    KeyTables,
    DeploymentTables,
    EnvTables,
    MountTables,
    RetentionTables,
    TlsTables,
    ServiceTables,
    GitTables,
    ChannelTables,
):
    """Async access to the database. Use `await Store.open(path)` and `await store.close()`."""

    # A mixin that provides a method comes before one that only declares it: mypy checks the
    # bases in this order.

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
        if version == len(MIGRATIONS):
            return
        # A migration may rebuild a table (SQLite's way to change a CHECK): dropping the old
        # one must not cascade to the rows that refer to it, so foreign keys are off while
        # migrating and checked once at the end, as sqlite.org/lang_altertable.html says.
        await self._db.execute("PRAGMA foreign_keys=OFF")
        for i in range(version, len(MIGRATIONS)):
            # executescript commits; the version bump is part of the same script.
            await self._db.executescript(
                f"BEGIN; {MIGRATIONS[i]}; PRAGMA user_version = {i + 1}; COMMIT;"
            )
        async with self._db.execute("PRAGMA foreign_key_check") as cur:
            broken = await cur.fetchall()
        await self._db.execute("PRAGMA foreign_keys=ON")
        if broken:
            raise RivetrError(f"the database's references are broken after migrating: {broken}")

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0
