"""The deploy queue: one deployment at a time per app, different apps in parallel up to
`max_concurrent_deploys`, and only the newest waiting deployment of an app kept.

The queue knows nothing about what a deployment does: it hands each job to `run` and
sets the job's result to what `run` returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from rivetr_git.models import App, Deployment, Status
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.store.database import Store


@dataclass
class Job:
    deployment: Deployment
    app: App
    log: DeployLog
    result: asyncio.Future[Deployment] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    cancelled_by: str | None = None  # set by deploys:cancel before its task is cancelled
    switching: bool = False  # set once its switch begins: from then on it is not cancelled


RunJob = Callable[[Job], Coroutine[Any, Any, Deployment]]


class DeployQueue:
    """Per-app queues of jobs, worked off by one task per app, sharing a number of slots."""

    def __init__(self, store: Store, run: RunJob, max_concurrent: int) -> None:
        self._store = store
        self._run = run
        self._max_concurrent = max_concurrent
        self._slots = asyncio.Semaphore(max_concurrent)
        self._queues: dict[str, collections.deque[Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[int, Job] = {}  # by deployment id, until each has its result
        self.observers: list[Callable[[Deployment], None]] = []
        self._running: dict[str, tuple[Job, asyncio.Task[Deployment]]] = {}

    def job(self, deployment_id: int) -> Job | None:
        """The queued or running job of a deployment (None once it has finished)."""
        return self._jobs.get(deployment_id)

    def _finished(self, job: Job, result: asyncio.Future[Deployment]) -> None:
        self._jobs.pop(job.deployment.id, None)
        if not result.cancelled() and result.exception() is None:
            for observe in self.observers:
                observe(result.result())

    def busy(self, app_name: str) -> bool:
        """True while a deployment of the app runs (or waits for a slot)."""
        worker = self._workers.get(app_name)
        return worker is not None and not worker.done()

    async def enqueue(self, app: App, deployment: Deployment, by: str) -> Job:
        """Queue `deployment` behind the app's running one; `by` names it to the waiting
        deployments it supersedes (a short sha, 'a rollback to #3', ...)."""
        job = Job(deployment=deployment, app=app, log=DeployLog(self._store, deployment.id))
        self._jobs[deployment.id] = job
        job.result.add_done_callback(lambda result: self._finished(job, result))
        queue = self._queues.setdefault(app.name, collections.deque())
        # Only the newest waiting deploy matters: older ones that have not started are dropped.
        while queue:
            await self._supersede(queue.popleft(), by=by)
        busy = self.busy(app.name)
        if busy:
            job.log.header(f"Queued behind an earlier deploy of {app.name}")
        queue.append(job)
        if not busy:
            self._workers[app.name] = asyncio.create_task(self._work(app.name))
        return job

    async def _supersede(self, job: Job, by: str) -> None:
        reason = f"superseded by {by}"
        await self._store.set_status(job.deployment.id, Status.FAILED, error_message=reason)
        job.log.error(
            f"Deploy of {job.deployment.commit_sha[:7]} cancelled: {reason}, pushed "
            "while it was waiting"
        )
        await job.log.close()
        job.result.set_result(await self._store.get_deployment(job.deployment.id))

    async def _work(self, app_name: str) -> None:
        queue = self._queues[app_name]
        while queue:
            job = queue.popleft()
            if self._slots.locked():
                job.log.header(
                    "Waiting for a free deploy slot (max_concurrent_deploys = "
                    f"{self._max_concurrent})"
                )
            task: asyncio.Task[Deployment] | None = None
            try:
                async with self._slots:
                    # A task of its own, so deploys:cancel can cancel this job alone.
                    task = asyncio.create_task(self._run(job))
                    self._running[app_name] = (job, task)
                    try:
                        final = await task
                    finally:
                        self._running.pop(app_name, None)
            except BaseException as exc:
                if task is not None:
                    task.cancel()  # the worker itself was cancelled (shutdown): so is the run
                if not job.result.done():
                    job.result.set_exception(exc)
                raise
            job.result.set_result(final)

    async def cancel(self, app_name: str, by: str) -> list[Deployment]:
        """Cancel the app's waiting deployments and its running one (unless its switch has
        begun: that release goes live). The deployments cancelled, the running one last
        (it records itself once its run has wound down)."""
        cancelled = []
        queue = self._queues.get(app_name, collections.deque())
        while queue:
            job = queue.popleft()
            reason = f"Deploy cancelled by {by}"
            await self._store.set_status(
                job.deployment.id, Status.CANCELLED, error_message=reason, cancelled_by=by
            )
            job.log.error(f"{reason} while it was waiting")
            await job.log.close()
            job.result.set_result(final := await self._store.get_deployment(job.deployment.id))
            cancelled.append(final)
        running = self._running.get(app_name)
        if running is not None and not running[0].switching:
            job, task = running
            job.cancelled_by = by
            task.cancel()
            cancelled.append(await asyncio.shield(job.result))
        return cancelled

    async def close(self) -> None:
        """Cancel the running deployments (each records itself as interrupted) and wait."""
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(BaseException):
                await task
