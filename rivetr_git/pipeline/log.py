"""A deployment's output: streamed live to whoever watches, and stored in deployment_logs."""

from __future__ import annotations

import asyncio
import contextlib
import time

from rivetr_git.models import LogLine, Status
from rivetr_git.store.database import Store
from rivetr_git.terminal import neutralise, red

HEADER = "-----> "
# The header of each stage a push shows (`-----> Building...`).
STAGE_TITLES = {
    Status.CLONING: "Cloning",
    Status.BUILDING: "Building",
    Status.STARTING: "Starting",
    Status.HEALTH_CHECK: "Health check",
}
INDENT = "       "
ERROR = " !     "
_FLUSH_EVERY = 0.5


class DeployLog:
    """Lines of one deployment. Watchers get every line from the start, then live ones."""

    def __init__(self, store: Store, deployment_id: int) -> None:
        self._store = store
        self.deployment_id = deployment_id
        self.stage = "pending"
        self._history: list[str] = []
        self._pending: list[LogLine] = []
        self._watchers: list[asyncio.Queue[str | None]] = []
        self._closed = False
        self._flusher: asyncio.Task[None] | None = None

    # Texts may carry what a pusher or an app controls (commit messages, build and command
    # output, errors quoting it): neutralised here, before the server's own styling.
    def header(self, text: str) -> None:
        self.emit(HEADER + neutralise(text), "system")

    def info(self, text: str) -> None:
        self.emit(INDENT + neutralise(text), "system")

    def output(self, text: str, stream: str) -> None:
        self.emit(INDENT + neutralise(text), stream)

    def error(self, text: str, in_red: bool = False) -> None:
        """`in_red`: shown in red in the pusher's terminal (git passes the codes through)."""
        text = neutralise(text)
        self.emit(ERROR + (red(text) if in_red else text), "system")

    def emit(self, line: str, stream: str) -> None:
        """Store and show `line` as it is: callers neutralise what they did not write."""
        self._history.append(line)
        self._pending.append(LogLine(time.time(), self.stage, stream, line))
        for queue in self._watchers:
            queue.put_nowait(line)
        if self._flusher is None and not self._closed:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    def watch(self) -> asyncio.Queue[str | None]:
        """A queue of every line so far and every line to come; None marks the end."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        for line in self._history:
            queue.put_nowait(line)
        if self._closed:
            queue.put_nowait(None)
        else:
            self._watchers.append(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[str | None]) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(queue)

    async def _flush_later(self) -> None:
        await asyncio.sleep(_FLUSH_EVERY)
        self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        lines, self._pending = self._pending, []
        await self._store.append_logs(self.deployment_id, lines)

    async def close(self) -> None:
        """Store what is left and tell watchers the deployment's output is complete."""
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self.flush()
        for queue in self._watchers:
            queue.put_nowait(None)
        self._watchers.clear()
