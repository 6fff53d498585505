"""`cron:list APP`, and the cron lines `logs APP` shows before the container's output."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from rivetr_git.models import App
from rivetr_git.pipeline.cron import Scheduler

Out = Callable[[str], Awaitable[None]]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class CronVerbs:
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    async def list(self, app: App, out: Out) -> int:
        await self._scheduler.refresh()  # a release that went live a moment ago counts
        jobs = self._scheduler.jobs(app.name)
        if not jobs:
            await out(
                f"{app.name} has no scheduled jobs: add [[cron]] tables (schedule, command) "
                "to rivetr.toml in its repository and push"
            )
            return 0
        for entry in jobs:
            job = entry.job
            last = self._scheduler.log.last(app.name, job)
            if entry.is_running and entry.started is not None:
                ran = f"running since {_when(entry.started)}"
            elif last is None:
                ran = "never run"
            elif last.exit_code is None:
                ran = f"could not run at {_when(last.started)}"
            else:
                ran = f"exit {last.exit_code} at {_when(last.started)}"
            await out(f"{job.name}  {job.schedule}  {job.shown}")
            await out(f"    next: {_when(entry.next_at)}  last: {ran}")
        return 0

    def forget(self, app: App) -> None:
        """apps:destroy: the app's cron log and last runs go with it."""
        self._scheduler.log.remove(app.name)

    async def log_lines(self, app: App, count: int, out: Out) -> None:
        for line in self._scheduler.log.tail(app.name, count):
            await out(line)

    @contextlib.asynccontextmanager
    async def following(self, app: App, out: Out) -> AsyncIterator[None]:
        """While the block runs, new cron lines of `app` go to `out` too (`logs -f`)."""
        with self._scheduler.log.follow(app.name) as queue:

            async def forward() -> None:
                while True:
                    await out(await queue.get())

            task = asyncio.create_task(forward())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
