"""Write-side flow control shared by both ends of the proxy (client and app connections)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FlowControl(asyncio.Protocol):
    """pause_writing/resume_writing turned into an awaitable drain, plus a hook for tunnels."""

    def __init__(self) -> None:
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        # A tunnel sets this to pause reading from the other side while this one is full.
        self.on_write_pause: Callable[[bool], None] | None = None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.on_write_pause is not None:
            self.on_write_pause(True)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.on_write_pause is not None:
            self.on_write_pause(False)
        self._release_drain()

    def _release_drain(self) -> None:
        """Wake a writer waiting for room (also when the connection is gone)."""
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def _wait_for_room(self) -> None:
        if self._write_paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
            self._drained = None
