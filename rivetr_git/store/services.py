"""The backing-service tables of the Store: services and their links to apps."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiosqlite

from rivetr_git.errors import AlreadyExists, NotFound
from rivetr_git.models import App


@dataclass(frozen=True)
class ServiceRow:
    id: int
    name: str
    kind: str  # postgres, redis, mariadb
    image: str
    password: bytes  # AES-GCM blob (secrets/crypto.py) bound to 'service:NAME'
    container_id: str | None
    host_port: int | None  # exposed on 127.0.0.1 (None: private)
    backup_schedule: str | None  # five-field cron expression (None: no scheduled backups)
    backup_keep: int
    created_at: str


@dataclass(frozen=True)
class ServiceLink:
    service: str
    app: str
    env_name: str  # DATABASE_URL, REDIS_URL or NAME_URL


_COLUMNS = (
    "id, name, kind, image, password, container_id, host_port, backup_schedule, "
    "backup_keep, created_at"
)


def _row(r: sqlite3.Row | tuple[object, ...]) -> ServiceRow:
    values = list(r)
    values[4] = bytes(values[4])
    return ServiceRow(*values)


class ServiceTables:
    """Mixed into Store, whose connection and transactions it shares."""

    # Provided by Store.
    _db: aiosqlite.Connection
    _transaction: Callable[[], AbstractAsyncContextManager[None]]

    async def add_service(
        self, name: str, kind: str, image: str, password: bytes, created_at: str
    ) -> ServiceRow:
        """Record a new service; AlreadyExists if an app or a service has that name."""
        async with self._transaction():
            async with self._db.execute("SELECT 1 FROM apps WHERE name = ?", (name,)) as cur:
                if await cur.fetchone():
                    raise AlreadyExists(
                        f"'{name}' is the name of an app; apps reach services by name, so "
                        "choose another service name"
                    )
            try:
                await self._db.execute(
                    "INSERT INTO services (name, kind, image, password, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, kind, image, password, created_at),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(
                    f"service '{name}' already exists; `services:info {name}` shows it"
                ) from None
        return await self.get_service(name)

    async def find_service(self, name: str) -> ServiceRow | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM services WHERE name = ?", (name,)
        ) as cur:
            row = await cur.fetchone()
        return _row(row) if row else None

    async def get_service(self, name: str) -> ServiceRow:
        found = await self.find_service(name)
        if found is None:
            raise NotFound(f"no service named '{name}'; `services:list` shows them")
        return found

    async def list_services(self) -> list[ServiceRow]:
        async with self._db.execute(f"SELECT {_COLUMNS} FROM services ORDER BY name") as cur:
            return [_row(r) for r in await cur.fetchall()]

    async def update_service(self, name: str, **values: object) -> ServiceRow:
        """Set columns (container_id, host_port, backup_schedule, backup_keep)."""
        allowed = {"container_id", "host_port", "backup_schedule", "backup_keep"}
        if not values or set(values) - allowed:
            raise ValueError(f"cannot update {sorted(set(values) - allowed)} of a service")
        assignments = ", ".join(f"{k} = ?" for k in values)
        await self._db.execute(
            f"UPDATE services SET {assignments} WHERE name = ?", (*values.values(), name)
        )
        await self._db.commit()
        return await self.get_service(name)

    async def delete_service(self, name: str) -> None:
        await self._db.execute("DELETE FROM services WHERE name = ?", (name,))
        await self._db.commit()

    async def service_links(
        self, service: str | None = None, app: str | None = None
    ) -> list[ServiceLink]:
        """Links of one service, of one app, or all."""
        async with self._db.execute(
            "SELECT s.name, a.name, l.env_name FROM service_links l "
            "JOIN services s ON s.id = l.service_id JOIN apps a ON a.id = l.app_id "
            "WHERE (? IS NULL OR s.name = ?) AND (? IS NULL OR a.name = ?) "
            "ORDER BY s.name, a.name",
            (service, service, app, app),
        ) as cur:
            return [ServiceLink(r[0], r[1], r[2]) for r in await cur.fetchall()]

    async def add_service_link(
        self, service: ServiceRow, app: App, env_name: str, env_blob: bytes
    ) -> None:
        """Link, and set the app's env var `env_name` to `env_blob`, in one transaction."""
        async with self._transaction():
            try:
                await self._db.execute(
                    "INSERT INTO service_links (service_id, app_id, env_name) VALUES (?, ?, ?)",
                    (service.id, app.id, env_name),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"{service.name} is already linked to {app.name}") from None
            await self._db.execute(
                "INSERT INTO env_vars (app_id, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value",
                (app.id, env_name, env_blob),
            )

    async def remove_service_link(self, service: ServiceRow, app: App) -> str:
        """Unlink, and remove the env var the link set; returns its name."""
        async with self._transaction():
            async with self._db.execute(
                "SELECT env_name FROM service_links WHERE service_id = ? AND app_id = ?",
                (service.id, app.id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound(f"{service.name} is not linked to {app.name}")
            await self._db.execute(
                "DELETE FROM service_links WHERE service_id = ? AND app_id = ?",
                (service.id, app.id),
            )
            await self._db.execute(
                "DELETE FROM env_vars WHERE app_id = ? AND name = ?", (app.id, row[0])
            )
        return str(row[0])
