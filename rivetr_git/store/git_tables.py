"""The git-host tables of the Store: where an app's code is fetched from, its encrypted
secrets (token, deploy key, webhook secret), webhook deliveries seen, and API tokens.

Secrets come in and go out as ciphertext (secrets/git_secrets.py encrypts them); API
tokens are stored as their SHA-256 only. Everything of an app goes with it (CASCADE).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite

from rivetr_git.errors import AlreadyExists, NotFound
from rivetr_git.models import App
from rivetr_git.store.schema import now

DELIVERIES_KEPT = timedelta(days=30)


@dataclass(frozen=True)
class GitSource:
    url: str
    public_key: str | None  # the deploy key's public half (git:key), if one was made


@dataclass(frozen=True)
class ApiToken:
    id: int
    name: str
    apps: tuple[str, ...] | None  # None: every app (an admin token)
    read_only: bool
    created_at: str
    last_used: str | None


class GitTables:
    """Mixed into Store, whose connection and transactions it shares."""

    # Provided by Store.
    _db: aiosqlite.Connection
    _transaction: Callable[[], AbstractAsyncContextManager[None]]

    async def git_source(self, app: App) -> GitSource | None:
        async with self._db.execute(
            "SELECT url, public_key FROM app_git WHERE app_id = ?", (app.id,)
        ) as cur:
            row = await cur.fetchone()
        return GitSource(row[0], row[1]) if row else None

    async def set_git_url(self, app: App, url: str) -> None:
        await self._db.execute(
            "INSERT INTO app_git (app_id, url) VALUES (?, ?) "
            "ON CONFLICT (app_id) DO UPDATE SET url = excluded.url",
            (app.id, url),
        )

    async def set_git_public_key(self, app: App, public_key: str) -> None:
        await self._db.execute(
            "UPDATE app_git SET public_key = ? WHERE app_id = ?", (public_key, app.id)
        )

    async def app_secret(self, app: App, name: str) -> bytes | None:
        async with self._db.execute(
            "SELECT value FROM app_secrets WHERE app_id = ? AND name = ?", (app.id, name)
        ) as cur:
            row = await cur.fetchone()
        return bytes(row[0]) if row else None

    async def set_app_secret(self, app: App, name: str, blob: bytes | None) -> None:
        """Store (None: remove) one encrypted secret of the app."""
        if blob is None:
            await self._db.execute(
                "DELETE FROM app_secrets WHERE app_id = ? AND name = ?", (app.id, name)
            )
            return
        await self._db.execute(
            "INSERT INTO app_secrets (app_id, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value",
            (app.id, name, blob),
        )

    async def first_delivery(self, app: App, delivery: str) -> bool:
        """Record a webhook delivery ID; False when it was seen before (a replay). IDs are
        kept for DELIVERIES_KEPT (hosts retry for hours, not weeks)."""
        cutoff = (datetime.now(UTC) - DELIVERIES_KEPT).isoformat(timespec="milliseconds")
        await self._db.execute(
            "DELETE FROM webhook_deliveries WHERE app_id = ? AND received_at < ?",
            (app.id, cutoff),
        )
        try:
            await self._db.execute(
                "INSERT INTO webhook_deliveries (app_id, delivery, received_at) VALUES (?, ?, ?)",
                (app.id, delivery, now()),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    # --- API tokens ------------------------------------------------------------------------

    async def create_api_token(
        self, name: str, digest: str, apps: list[str] | None, read_only: bool
    ) -> None:
        try:
            await self._db.execute(
                "INSERT INTO api_tokens (name, hash, apps, read_only, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, digest, None if apps is None else ",".join(apps), int(read_only), now()),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(
                f"a token named {name} exists; tokens:revoke {name} first"
            ) from None

    async def api_tokens(self) -> list[ApiToken]:
        async with self._db.execute(
            "SELECT id, name, apps, read_only, created_at, last_used FROM api_tokens ORDER BY name"
        ) as cur:
            return [_token(r) for r in await cur.fetchall()]

    async def api_token_by_hash(self, digest: str) -> ApiToken | None:
        async with self._db.execute(
            "SELECT id, name, apps, read_only, created_at, last_used FROM api_tokens "
            "WHERE hash = ?",
            (digest,),
        ) as cur:
            row = await cur.fetchone()
        return _token(row) if row else None

    async def touch_api_token(self, token_id: int) -> None:
        await self._db.execute(
            "UPDATE api_tokens SET last_used = ? WHERE id = ?", (now(), token_id)
        )

    async def revoke_api_token(self, name: str) -> None:
        cur = await self._db.execute("DELETE FROM api_tokens WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise NotFound(f"no token named {name}; tokens:list shows them")


def _token(row: Any) -> ApiToken:
    apps = row[2]
    return ApiToken(
        id=int(row[0]),
        name=str(row[1]),
        apps=None if apps is None else tuple(str(apps).split(",")),
        read_only=bool(row[3]),
        created_at=str(row[4]),
        last_used=None if row[5] is None else str(row[5]),
    )
