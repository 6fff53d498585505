"""Runs deployments: one at a time per app, different apps in parallel up to a limit.

A deployment belongs to the pipeline, not to the push that asked for it: a pusher who
disconnects stops seeing output, but the deploy still finishes (or fails cleanly) and is
recorded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rivetr_git.errors import DeployFailed, RivetrError
from rivetr_git.models import App, Deployment, Status
from rivetr_git.pipeline import build, checkout, cleanup, health, promote, start
from rivetr_git.pipeline.labels import labels
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.repos import Repos
from rivetr_git.runtime.base import Runtime
from rivetr_git.settings import Settings
from rivetr_git.store import Store

log = logging.getLogger(__name__)

_STAGE_TITLES = {
    Status.CLONING: "Cloning",
    Status.BUILDING: "Building",
    Status.STARTING: "Starting",
    Status.HEALTH_CHECK: "Health check",
}


@dataclass
class Job:
    deployment: Deployment
    app: App
    log: DeployLog
    result: asyncio.Future[Deployment] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Deployer:
    """The deploy queue and the code that takes one deployment through every stage."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        repos: Repos,
        runtime: Runtime,
        routes: RouteTable,
        instance: str,
    ) -> None:
        self._settings = settings
        self._store = store
        self._repos = repos
        self._runtime = runtime
        self._routes = routes
        self._instance = instance
        self._slots = asyncio.Semaphore(settings.max_concurrent_deploys)
        self._queues: dict[str, collections.deque[Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._gate = cleanup.BuildGate()
        self._work_dir = settings.data_dir / "tmp"

    def app_url(self, app: str) -> str:
        port = self._settings.public_port or self._settings.proxy_port
        suffix = "" if port == 80 else f":{port}"
        return f"http://{self._routes.hostname(app)}{suffix}/"

    def set_public_port(self, port: int) -> None:
        """Called once the proxy is bound, so URLs show the real port when 0 was asked."""
        if not self._settings.public_port:
            self._settings = replace(self._settings, public_port=port)

    async def submit(self, app: App, sha: str, pushed_by: str | None) -> Job:
        """Record a pending deployment of `sha` and queue it behind the app's earlier ones."""
        info = await self._repos.commit_info(app.name, sha)
        deployment = await self._store.create_deployment(app, sha, info.message, pushed_by)
        job = Job(deployment=deployment, app=app, log=DeployLog(self._store, deployment.id))
        queue = self._queues.setdefault(app.name, collections.deque())
        # Only the newest waiting push matters: older ones that have not started are dropped.
        while queue:
            await self._supersede(queue.popleft(), by=sha)
        busy = app.name in self._workers and not self._workers[app.name].done()
        if busy:
            job.log.header(f"Queued behind an earlier deploy of {app.name}")
        queue.append(job)
        if not busy:
            self._workers[app.name] = asyncio.create_task(self._work(app.name))
        return job

    async def _supersede(self, job: Job, by: str) -> None:
        reason = f"superseded by {by[:7]}"
        await self._store.set_status(job.deployment.id, Status.FAILED, error_message=reason)
        job.log.error(f"Deploy of {job.deployment.commit_sha[:7]} cancelled: {reason}, pushed "
                      "while it was waiting")
        await job.log.close()
        job.result.set_result(await self._store.get_deployment(job.deployment.id))

    async def _work(self, app_name: str) -> None:
        queue = self._queues[app_name]
        while queue:
            job = queue.popleft()
            if self._slots.locked():
                limit = self._settings.max_concurrent_deploys
                job.log.header(f"Waiting for a free deploy slot (max_concurrent_deploys = {limit})")
            try:
                async with self._slots:
                    final = await self._deploy(job)
            except BaseException as exc:
                if not job.result.done():
                    job.result.set_exception(exc)
                raise
            job.result.set_result(final)

    async def close(self) -> None:
        tasks = [*self._workers.values(), *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # --- one deployment -----------------------------------------------------------------------

    async def _deploy(self, job: Job) -> Deployment:
        d, app, out = job.deployment, job.app, job.log
        started = time.monotonic()
        self._work_dir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(tempfile.mkdtemp(prefix=f"build-{app.name}-{d.id}-", dir=self._work_dir))
        image: str | None = None
        out.header(
            f"Deploying {app.name} {d.commit_sha[:7]} \"{d.commit_message}\" (deployment #{d.id})"
        )
        try:
            async with self._stage(job, Status.CLONING):
                context = await checkout.checkout(self._repos, app.name, d.commit_sha, build_dir,
                                                  out)
            async with self._stage(job, Status.BUILDING, f"({app.dockerfile})"), \
                    self._gate.building():
                image = await build.build(self._runtime, context, self._instance, app.name, d.id,
                                          app.dockerfile, out)
            await self._store.set_status(d.id, Status.BUILDING, image=image)
            async with self._stage(job, Status.STARTING):
                port = await start.app_port(self._runtime, image, app.port)
                container = await start.start(self._runtime, self._instance, app.name, d.id,
                                              image, port, env={})
                out.info(f"container {container.id[:12]} listening on port {port}")
            await self._store.set_status(d.id, Status.STARTING, container_id=container.id,
                                         host_port=container.host_port)
            assert container.host_port is not None  # start() guarantees a published port
            async with self._stage(job, Status.HEALTH_CHECK):
                policy = self._health_policy(app)
                attempts, _ = await health.wait_healthy(
                    self._runtime, container.id, container.host_port,
                    self._routes.hostname(app.name), policy,
                )
                what = f"GET {policy.path}" if policy.path else "answered"
                out.info(f"{what} ok after {attempts} attempt{'s' if attempts > 1 else ''}")
            previous = await promote.promote(self._store, self._routes, d, app.name,
                                             container.host_port)
            if previous is not None and previous.container_id:
                self._spawn(promote.retire(self._runtime, previous.container_id,
                                           self._settings.stop_timeout))
            self._spawn(cleanup.prune_release_images(self._runtime, self._gate, self._instance,
                                                     app.name, self._settings.keep_releases))
            out.stage = Status.RUNNING.value
            out.header(f"Running: {self.app_url(app.name)} (live in "
                       f"{time.monotonic() - started:.2f}s)")
        except DeployFailed as exc:
            await self._fail(job, image, exc.stage, exc.reason)
        except RivetrError as exc:
            await self._fail(job, image, out.stage, str(exc))
        except asyncio.CancelledError:
            await asyncio.shield(self._fail(job, image, out.stage, "interrupted by shutdown"))
            raise
        except Exception as exc:
            log.exception("deployment #%s crashed", d.id)
            await self._fail(job, image, out.stage, f"internal error: {exc!r}")
        finally:
            await asyncio.to_thread(shutil.rmtree, build_dir, True)
            await out.close()
        return await self._store.get_deployment(d.id)

    @contextlib.asynccontextmanager
    async def _stage(self, job: Job, status: Status, note: str = "") -> AsyncIterator[None]:
        job.log.stage = status.value
        job.log.header(f"{_STAGE_TITLES[status]}... {note}".rstrip())
        await self._store.set_status(job.deployment.id, status)
        began = time.monotonic()
        yield
        job.log.info(f"{_STAGE_TITLES[status].lower()} done in {time.monotonic() - began:.2f}s")

    def _health_policy(self, app: App) -> health.HealthPolicy:
        s = self._settings
        path = app.health_path if app.health_path is not None else s.health_path
        return health.HealthPolicy(path=path, interval=s.health_interval,
                                   timeout=s.health_timeout, retries=s.health_retries)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fail(self, job: Job, image: str | None, stage: str, reason: str) -> None:
        """Leave nothing half-done: no container, no image, the branch back where it was."""
        d, out = job.deployment, job.log
        try:
            for container in await self._runtime.list_containers(
                labels(self._instance, job.app.name, d.id)
            ):
                await self._runtime.remove(container.id)
            if image is not None:
                async with self._gate.removing():
                    await self._runtime.remove_image(image)
        except RivetrError as exc:
            # Start-up reconciliation removes what is left by label.
            log.warning("cleanup of deployment #%s incomplete: %s", d.id, exc)
        await self._store.set_status(d.id, Status.FAILED, error_message=f"{stage}: {reason}")
        current = await self._store.current_deployment(job.app)
        branch = job.app.deploy_branch or self._settings.deploy_branch
        moved = await self._repos.reset_branch(
            job.app.name, branch, expected=d.commit_sha,
            to=current.commit_sha if current else None,
        )
        if current is not None:
            out.error(f"The previous release (#{current.id}, {current.commit_sha[:7]}) keeps "
                      "serving.")
        if moved:
            where = current.commit_sha[:7] if current else "its state before this push"
            out.error(f"Branch {branch} on the server is back at {where}; push again to retry.")
        out.error(f"Deploy failed at {stage}: {reason}")
