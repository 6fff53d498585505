"""The notification channel table of the Store (notify:add): an app's channels, or the
server-wide ones (no app). URLs are stored as AES-GCM blobs (secrets/channels.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiosqlite

from rivetr_git.errors import NotFound
from rivetr_git.models import App
from rivetr_git.store.schema import now


@dataclass(frozen=True)
class StoredChannel:
    id: int
    app: str | None  # None: server-wide
    url: bytes  # encrypted
    events: str | None  # comma-separated event names; None: every event


class ChannelTables:
    """Mixed into Store, whose connection and transactions it shares."""

    # Provided by Store.
    _db: aiosqlite.Connection
    _transaction: Callable[[], AbstractAsyncContextManager[None]]

    async def add_channel(self, app: App | None, url: bytes, events: str | None) -> int:
        cur = await self._db.execute(
            "INSERT INTO notify_channels (app_id, url, events, created_at) VALUES (?, ?, ?, ?)",
            (app.id if app else None, url, events, now()),
        )
        assert cur.lastrowid is not None  # sqlite always sets it after an INSERT
        return cur.lastrowid

    async def channels(self, app: App | None, with_server: bool = False) -> list[StoredChannel]:
        """The app's channels (None: the server-wide ones); `with_server` adds those too."""
        where = "c.app_id IS NULL" if app is None else "c.app_id = ?"
        if app is not None and with_server:
            where += " OR c.app_id IS NULL"
        async with self._db.execute(
            "SELECT c.id, a.name, c.url, c.events FROM notify_channels c "
            f"LEFT JOIN apps a ON a.id = c.app_id WHERE {where} ORDER BY c.id",
            () if app is None else (app.id,),
        ) as cur:
            return [StoredChannel(r[0], r[1], bytes(r[2]), r[3]) for r in await cur.fetchall()]

    async def remove_channel(self, app: App | None, channel_id: int) -> None:
        where = "app_id IS NULL" if app is None else "app_id = ?"
        cur = await self._db.execute(
            f"DELETE FROM notify_channels WHERE id = ? AND {where}",
            (channel_id,) if app is None else (channel_id, app.id),
        )
        if cur.rowcount == 0:
            owner = app.name if app else "the server"
            raise NotFound(
                f"{owner} has no notification channel #{channel_id}; "
                f"`notify:list{' ' + app.name if app else ''}` lists them"
            )
