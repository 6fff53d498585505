"""The cron scheduler: one asyncio task in the daemon runs the live releases' `[[cron]]` jobs.

What is scheduled follows the database: every `refresh` seconds the scheduler asks which
release of each app is live and, for a release it has not seen, reads that release's jobs
(its commit's `rivetr.toml`). So a deploy, rollback or restart replaces an app's jobs, and
a server start rebuilds them all, with nothing kept in memory that the database does not
say. Each run is a one-off container of the live release (`run`'s path: env, limits,
network). A run still going when the job is due again is skipped, and the app's cron log
says so. The clock and the sleep are injectable, so unit tests step time by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from rivetr_git.errors import RivetrError
from rivetr_git.models import Status
from rivetr_git.pipeline import repo_config
from rivetr_git.pipeline.cron_jobs import CronJob
from rivetr_git.pipeline.cron_log import CronLog, LastRun
from rivetr_git.runtime.base import OnOutput
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# app -> the live release's deployment id (apps with nothing live are left out)
LiveReleases = Callable[[], Awaitable[Mapping[str, int]]]
# (app, deployment id) -> that release's jobs
JobsOf = Callable[[str, int], Awaitable[tuple[CronJob, ...]]]
# (app, job, where its output goes) -> the run's exit code
RunJob = Callable[[str, CronJob, OnOutput], Awaitable[int]]
Sleep = Callable[[float], Awaitable[None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Scheduled:
    """One job of an app's live release, as `cron:list` shows it."""

    app: str
    deployment_id: int
    job: CronJob
    next_at: datetime
    running: asyncio.Task[None] | None = None
    started: datetime | None = None  # of the run in progress

    @property
    def is_running(self) -> bool:
        return self.running is not None and not self.running.done()


class Scheduler:
    def __init__(
        self,
        live: LiveReleases,
        jobs_of: JobsOf,
        run_job: RunJob,
        cron_log: CronLog,
        *,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        refresh: float = 5.0,
    ) -> None:
        self._live = live
        self._jobs_of = jobs_of
        self._run_job = run_job
        self.log = cron_log
        self._clock = clock
        self._sleep = sleep
        self._refresh = refresh
        self._apps: dict[str, list[Scheduled]] = {}
        self._seen: dict[str, int] = {}  # app -> the release its jobs were read from
        self._refreshing = asyncio.Lock()  # the loop and cron:list both refresh
        self._task: asyncio.Task[None] | None = None
        # Runs of replaced releases still going: awaited (or cancelled) at close.
        self._runs: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cron")

    async def close(self) -> None:
        """Stop scheduling; runs in progress are cancelled (their containers removed)."""
        tasks = [t for t in (self._task, *self._runs) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def jobs(self, app: str) -> list[Scheduled]:
        return list(self._apps.get(app, ()))

    async def refresh(self) -> None:
        """Follow the database: jobs of releases that went live, none for apps with none."""
        async with self._refreshing:
            await self._follow(await self._live())

    async def _follow(self, live: Mapping[str, int]) -> None:
        now = self._clock()
        for app in set(self._apps) - set(live):
            del self._apps[app], self._seen[app]
        for app, deployment_id in live.items():
            if self._seen.get(app) == deployment_id:
                continue
            jobs = await self._jobs_of(app, deployment_id)
            self._seen[app] = deployment_id
            self._apps[app] = [
                Scheduled(app, deployment_id, job, job.next_after(now)) for job in jobs
            ]

    def tick(self) -> None:
        """Start every job that is due now; skip (and say so) those still running."""
        now = self._clock()
        for entries in self._apps.values():
            for entry in entries:
                if entry.next_at > now:
                    continue
                due, entry.next_at = entry.next_at, entry.job.next_after(now)
                if entry.is_running:
                    assert entry.started is not None
                    self.log.line(
                        entry.app,
                        entry.job.name,
                        f"skipped the run due at {_hhmm(due)}: the run started at "
                        f"{_hhmm(entry.started)} is still going",
                    )
                    continue
                entry.started = now
                entry.running = asyncio.create_task(self._run(entry, now))
                self._runs.add(entry.running)
                entry.running.add_done_callback(self._runs.discard)

    def next_wake(self) -> float:
        """Seconds until the next job is due, at most `refresh`."""
        now = self._clock()
        wake = self._refresh
        for entries in self._apps.values():
            for entry in entries:
                wake = min(wake, (entry.next_at - now).total_seconds())
        return max(wake, 0.05)

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
                self.tick()
            except RivetrError as exc:
                log.warning("cron: %s", exc)
            except Exception:
                log.exception("cron scheduler pass failed; trying again")
            await self._sleep(self.next_wake())

    async def _run(self, entry: Scheduled, started: datetime) -> None:
        app, job = entry.app, entry.job
        self.log.line(app, job.name, f"starting ({job.schedule}): {job.shown}")
        out = self.log.output(app, job.name)
        code: int | None = None
        try:
            code = await self._run_job(app, job, out.feed)
            out.close()
            self.log.line(app, job.name, f"exited with code {code}")
        except RivetrError as exc:
            out.close()
            self.log.line(app, job.name, f"could not run: {exc}")
        except asyncio.CancelledError:
            self.log.line(app, job.name, "stopped: the server is shutting down")
            raise
        except Exception:
            log.exception("cron run of %s %s failed", app, job.name)
            out.close()
            self.log.line(app, job.name, "could not run: internal error; see the server log")
        self.log.record(app, job, LastRun(started=started, exit_code=code, ended=self._clock()))


def _hhmm(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def from_store(store: Store, repos: Repos) -> tuple[LiveReleases, JobsOf]:
    """The scheduler's view of the database: live releases, and each one's `[[cron]]`."""

    async def live() -> Mapping[str, int]:
        found: dict[str, int] = {}
        for d in await store.deployments_with_status([Status.RUNNING]):
            found[d.app_name] = max(found.get(d.app_name, 0), d.id)
        return found

    async def jobs_of(app: str, deployment_id: int) -> tuple[CronJob, ...]:
        d = await store.get_deployment(deployment_id)
        try:
            text = await repos.read_file(app, d.commit_sha, repo_config.FILE_NAME)
            return repo_config.parse(text).cron
        except RivetrError as exc:  # it parsed when deployed; say why it no longer does
            log.warning("cron: no jobs for %s (release #%s): %s", app, deployment_id, exc)
            return ()

    return live, jobs_of
