"""The key tables of the Store: SSH keys and the grants that give a developer key an app."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosqlite

from rivetr_git.errors import AlreadyExists, NotFound
from rivetr_git.models import App, Role, SshKey
from rivetr_git.store.schema import columns, from_row, now

_KEY_COLUMNS = columns(SshKey)


def _key(row: Sequence[Any]) -> SshKey:
    return from_row(SshKey, row, role=Role)


class KeyTables:
    """Mixed into Store, whose connection it shares."""

    # Provided by Store.
    _db: aiosqlite.Connection
    get_app: Callable[[str], Awaitable[App]]

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

    async def revoke(self, key_name: str, app_name: str) -> None:
        key = await self.get_key(key_name)
        app = await self.get_app(app_name)
        cur = await self._db.execute(
            "DELETE FROM app_access WHERE key_id = ? AND app_id = ?", (key.id, app.id)
        )
        if cur.rowcount == 0:
            raise NotFound(f"key '{key_name}' has no grant for '{app_name}'")
