"""Notification channels at rest: URLs encrypted with the master key (they hold tokens and
passwords), bound to their app ('*' for the server-wide ones); decrypted only to send."""

from __future__ import annotations

from rivetr_git.models import App
from rivetr_git.secrets.crypto import Cipher
from rivetr_git.store.channels import StoredChannel
from rivetr_git.store.database import Store

SERVER = "*"  # the owner the server-wide channels are bound to (never an app name)
NAME = "notify-channel"


class Channels:
    def __init__(self, store: Store, cipher: Cipher) -> None:
        self._store = store
        self._cipher = cipher

    async def add(self, app: App | None, url: str, events: list[str] | None) -> int:
        blob = self._cipher.encrypt(app.name if app else SERVER, NAME, url)
        return await self._store.add_channel(app, blob, ",".join(events) if events else None)

    async def remove(self, app: App | None, channel_id: int) -> None:
        await self._store.remove_channel(app, channel_id)

    async def list(
        self, app: App | None, with_server: bool = False
    ) -> list[tuple[int, str | None, str, frozenset[str] | None]]:
        """(id, app name or None, URL in clear, events or None) of the channels."""
        return [self._open(c) for c in await self._store.channels(app, with_server)]

    def _open(self, c: StoredChannel) -> tuple[int, str | None, str, frozenset[str] | None]:
        url = self._cipher.decrypt(c.app or SERVER, NAME, c.url)
        events = frozenset(c.events.split(",")) if c.events else None
        return c.id, c.app, url, events
