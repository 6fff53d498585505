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

from rivetr_git.errors import (
    BuildFailed,
    DeployFailed,
    NotFound,
    RivetrError,
    ValidationError,
)
from rivetr_git.models import App, Deployment, Status
from rivetr_git.notify import Notifier
from rivetr_git.pipeline import (
    app_policy,
    build,
    checkout,
    cleanup,
    compose,
    deploy_commands,
    health,
    promote,
    repo_config,
    start,
    watch,
)
from rivetr_git.pipeline.labels import (
    container_name,
    image_repository,
    labels,
    network_name,
)
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import Runtime
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos

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
        notifier: Notifier,
        env_vars: EnvVars,
    ) -> None:
        self._settings = settings
        self._store = store
        self._repos = repos
        self._runtime = runtime
        self._routes = routes
        self._instance = instance
        self._notifier = notifier
        self._env_vars = env_vars
        self._slots = asyncio.Semaphore(settings.max_concurrent_deploys)
        self._queues: dict[str, collections.deque[Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._gate = cleanup.BuildGate()
        self._build_options = build.BuildOptions.from_settings(settings)
        self._watches: dict[str, asyncio.Event] = {}
        self._watched: set[int] = set()
        self._work_dir = settings.data_dir / "tmp"
        self._compose_dir = settings.data_dir / "compose"

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
        return await self._enqueue(app, deployment, by=sha[:7])

    async def rollback(self, app: App, release_id: int | None, requested_by: str | None) -> Job:
        """Queue a deployment that runs an earlier release's image again.

        `release_id` None means the release before the live one. Raises NotFound or
        ValidationError with advice when there is nothing (left) to roll back to.
        """
        releases = await self._store.releases(app)
        current = await self._store.current_deployment(app)
        older = [r for r in releases if current is None or r.id != current.id]
        if release_id is None:
            if not older:
                raise NotFound(f"{app.name} has no earlier release to roll back to")
            target = older[0]
        else:
            found = [r for r in releases if r.id == release_id]
            if not found:
                raise NotFound(f"{app.name} has no release #{release_id}; "
                               f"`releases {app.name}` lists them")
            target = found[0]
            if current is not None and target.id == current.id:
                raise ValidationError(f"release #{target.id} is already live")
        assert target.image is not None  # releases() only returns deployments with an image
        repository = target.image.rpartition(":")[0]
        if target.image not in await self._runtime.list_images(repository):
            raise NotFound(f"the image of release #{target.id} was pruned "
                           f"(keep_releases = {self._settings.keep_releases}); pick a newer "
                           f"one from `releases {app.name}`")
        deployment = await self._store.create_deployment(
            app, target.commit_sha, target.commit_message, requested_by, rollback_of=target,
            kind="rollback")
        return await self._enqueue(app, deployment, by=f"a rollback to #{target.id}")

    async def restart(self, app: App, requested_by: str | None, why: str) -> Job | None:
        """Queue a fresh container of the live release (new env, limits, settings): start,
        health check, switch, drain, like a deploy. None when nothing is live."""
        current = await self._store.current_deployment(app)
        if current is None or current.image is None:
            return None
        deployment = await self._store.create_deployment(
            app, current.commit_sha, current.commit_message, requested_by, rollback_of=current,
            kind="restart")
        return await self._enqueue(app, deployment, by=f"a restart ({why})")

    async def destroy(self, app: App) -> None:
        """Remove everything of `app`: containers, images, route, repository, rows.

        Refused while one of its deploys runs (it would leave a container behind)."""
        worker = self._workers.get(app.name)
        if worker is not None and not worker.done():
            raise ValidationError(f"a deploy of {app.name} is running; destroy it once that "
                                  "has finished (deploys shows it)")
        older = self._watches.pop(app.name, None)
        if older is not None:
            older.set()  # end its watch window: nothing is left to roll back to
        self._routes.remove(app.name)
        await self._routes.wait_applied(promote.SWITCH_TIMEOUT)  # every proxy process too
        for container in await self._runtime.list_containers(labels(self._instance, app.name)):
            await self._runtime.remove(container.id)
        await self._runtime.remove_network(network_name(self._instance, app.name))
        await compose.remove_all(self._compose_dir, self._runtime, self._instance, app.name)
        async with self._gate.removing():
            for image in await self._runtime.list_images(
                    image_repository(self._instance, app.name)):
                await self._runtime.remove_image(image)
        await self._store.delete_app(app)
        await self._repos.delete(app.name)

    async def _enqueue(self, app: App, deployment: Deployment, by: str) -> Job:
        job = Job(deployment=deployment, app=app, log=DeployLog(self._store, deployment.id))
        queue = self._queues.setdefault(app.name, collections.deque())
        # Only the newest waiting deploy matters: older ones that have not started are dropped.
        while queue:
            await self._supersede(queue.popleft(), by=by)
        busy = app.name in self._workers and not self._workers[app.name].done()
        if busy:
            job.log.header(f"Queued behind an earlier deploy of {app.name}")
        queue.append(job)
        if not busy:
            self._workers[app.name] = asyncio.create_task(self._work(app.name))
        return job

    async def _supersede(self, job: Job, by: str) -> None:
        reason = f"superseded by {by}"
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
        d, out = job.deployment, job.log
        # Settings as they are now, not when the job was queued.
        app = job.app = await self._store.get_app(job.app.name)
        started = time.monotonic()
        self._work_dir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(tempfile.mkdtemp(prefix=f"build-{app.name}-{d.id}-", dir=self._work_dir))
        built: str | None = None  # an image this deployment built (removed if it fails)
        build_type: str | None = None  # how the image was (or is) built
        group: compose.Group | None = None  # a compose deployment's project
        what = f"{d.commit_sha[:7]} \"{d.commit_message}\" (deployment #{d.id})"
        if d.kind == "restart":
            out.header(f"Restarting {app.name} (release #{d.rollback_of}): {what}")
        elif d.rollback_of is not None:
            out.header(f"Rolling back {app.name} to release #{d.rollback_of}: {what}")
        else:
            out.header(f"Deploying {app.name} {what}")
        self._notifier.notify("deploy.started", app, deployment_id=d.id, commit=d.commit_sha,
                              rollback_of=d.rollback_of)
        try:
            if d.image is not None:
                image = d.image  # a rollback or restart: the release's image is built
                build_type = d.build_type  # as the release was built
                if build_type == "compose":
                    # Only the routed service would run, and retiring the live group would
                    # remove its other services.
                    raise DeployFailed("starting", "a compose group cannot be restarted or "
                                       "rolled back yet (only its routed service would run); "
                                       "push a commit to deploy the group again")
                repo = await self._repo_config(app, d, out)
            else:
                async with self._stage(job, Status.CLONING):
                    export = await checkout.checkout(self._repos, app.name, d.commit_sha,
                                                     build_dir, out)
                    repo = await self._repo_config(app, d, out)
                build_env = await app_policy.build_env(self._env_vars, app, d.id, out)
                async with self._stage(job, Status.BUILDING), self._gate.building():
                    try:
                        result = await build.build(
                            self._runtime, app, d.id, self._instance, export.path, out,
                            self._build_options, build_env=build_env,
                            repo_build_type=repo.build_type)
                    except BuildFailed as exc:
                        raise checkout.explain_build_failure(exc, export) from None
                    image = built = result.image
                    build_type, group = result.detection.build_type, result.group
                await self._store.set_status(d.id, Status.BUILDING, image=image,
                                             build_type=build_type)
            async with self._stage(job, Status.STARTING):
                # A rollback runs the release as it ran then, whatever the settings say now;
                # a restart takes the app's settings as they are.
                ran_with = d.app_port if d.kind == "rollback" else None
                port = ran_with or await start.app_port(self._runtime, image, app.port)
                env = await start.release_env(self._env_vars, d.id)
                if group is not None:
                    assert result.detection.compose_file is not None
                    container = await compose.up(
                        self._runtime, build_dir / "src", result.detection.compose_file,
                        self._instance, app.name, d.id, app.compose_service, port, env, out,
                        self._compose_dir, compose.Limits(
                            cpus=app.cpu_limit, memory=app.memory_limit,
                            ulimits=self._runtime.container_ulimits),
                        app.compose_bind_list)
                else:
                    container = await start.start(self._runtime, self._instance, app.name,
                                                  d.id, image, port, env, cpus=app.cpu_limit,
                                                  memory=app.memory_limit)
                out.info(f"container {container.id[:12]} listening on port {port}"
                         f"{app_policy.limits_note(app)}")
                await self._store.set_status(d.id, Status.STARTING, container_id=container.id,
                                             host_port=container.host_port, app_port=port)
                if app.pre_deploy:
                    failed = await deploy_commands.run(
                        self._runtime, container.id, "pre", app.pre_deploy,
                        app_policy.command_timeout(self._settings, app), out)
                    if failed:
                        raise DeployFailed("pre_deploy", failed)
            assert container.host_port is not None  # start() guarantees a published port
            async with self._stage(job, Status.HEALTH_CHECK):
                policy = app_policy.health(self._settings, app, repo, build_type)
                attempts, _ = await health.wait_healthy(
                    self._runtime, container.id, container.host_port,
                    self._routes.hostname(app.name), policy,
                )
                what = f"GET {policy.path}" if policy.path else "answered"
                out.info(f"{what} ok after {attempts} attempt{'s' if attempts > 1 else ''}")
            fresh = await self._store.get_deployment(d.id)
            previous = await promote.promote(self._store, self._routes, fresh,
                                             container.host_port)
            self._watch(watch.Switch(new=fresh, previous=previous,
                                     host_header=self._routes.hostname(app.name), policy=policy))
            if previous is not None and self._settings.auto_rollback:
                out.info(f"watching it for {self._settings.watch_window:g}s: if it fails in "
                         f"that time, #{previous.id} takes over again")
            keep: set[str] = set()  # the images of the newest keep_releases releases
            for release in await self._store.releases(app):
                if len(keep) == self._settings.keep_releases:
                    break
                keep.add(release.image or "")
            self._spawn(cleanup.prune_release_images(
                self._runtime, self._gate, image_repository(self._instance, app.name), keep))
            # Networks of compose groups retired since the app's last deploy.
            await compose.sweep(self._compose_dir, self._runtime, self._instance, app.name)
            self._notifier.notify("deploy.succeeded", app, deployment_id=d.id,
                                  commit=d.commit_sha, url=self.app_url(app.name))
            out.stage = Status.RUNNING.value
            if app.post_deploy:
                failed = await deploy_commands.run(
                    self._runtime, container.id, "post", app.post_deploy,
                    app_policy.command_timeout(self._settings, app), out)
                if failed:
                    await self._store.set_status(d.id, Status.RUNNING, post_deploy_error=failed)
                    out.error(f"{failed}; the release stays live", in_red=True)
            out.header(f"Running: {self.app_url(app.name)} (live in "
                       f"{time.monotonic() - started:.2f}s)")
        except DeployFailed as exc:
            await self._fail(job, built, exc.stage, exc.reason)
        except RivetrError as exc:
            await self._fail(job, built, out.stage, str(exc))
        except asyncio.CancelledError:
            await asyncio.shield(self._fail(job, built, out.stage, "interrupted by shutdown"))
            raise
        except Exception as exc:
            log.exception("deployment #%s crashed", d.id)
            await self._fail(job, built, out.stage, f"internal error: {exc!r}")
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

    async def _repo_config(self, app: App, d: Deployment, out: DeployLog
                           ) -> repo_config.RepoConfig:
        text = await self._repos.read_file(app.name, d.commit_sha, repo_config.FILE_NAME)
        config = repo_config.parse(text)
        if text is not None:
            out.info(f"using {repo_config.FILE_NAME} from the repository")
        return config

    async def health_in_force(self, app: App) -> health.HealthPolicy:
        """The health check the app's next restart would use (its live commit's rivetr.toml
        included)."""
        current = await self._store.current_deployment(app)
        repo = repo_config.RepoConfig()
        if current is not None:
            with contextlib.suppress(RivetrError):
                repo = repo_config.parse(await self._repos.read_file(
                    app.name, current.commit_sha, repo_config.FILE_NAME))
        return app_policy.health(self._settings, app, repo,
                             current.build_type if current is not None else None)

    def health_defaults(self) -> health.HealthPolicy:
        """The server-wide health check, for `apps:info`."""
        return app_policy.health_defaults(self._settings)

    def _watch(self, switch: watch.Switch) -> None:
        """Start the post-switch watch; a newer switch of the app ends the older watch."""
        app = switch.new.app_name
        older = self._watches.get(app)
        if older is not None:
            older.set()
        superseded = self._watches[app] = asyncio.Event()
        s = self._settings
        self._watched.add(switch.new.id)

        async def watched() -> None:
            try:
                await watch.after_switch(
                    self._store, self._routes, self._runtime, switch, window=s.watch_window,
                    auto_rollback=s.auto_rollback, drain_timeout=s.drain_timeout,
                    stop_timeout=s.stop_timeout, superseded=superseded,
                    on_rollback=self._rolled_back, restart_previous=self._restart_previous,
                )
            finally:
                self._watched.discard(switch.new.id)

        self._spawn(watched())

    def is_watched(self, deployment_id: int) -> bool:
        """True while a release is inside its post-switch watch window."""
        return deployment_id in self._watched

    async def _restart_previous(self, switch: watch.Switch, reason: str) -> None:
        """The new release failed in its watch window and the previous container is gone:
        run the previous release again from its image, then retire the failed one."""
        previous, new = switch.previous, switch.new
        assert previous is not None
        app = await self._store.get_app(new.app_name)
        await self._store.set_status(new.id, Status.FAILED, error_message=(
            f"{reason}; rolling back to #{previous.id} from its image"))
        log.warning("%s: deployment #%s failed in its watch window (%s); starting #%s again "
                    "from its image", app.name, new.id, reason, previous.id)
        try:
            job = await self.rollback(app, previous.id, "auto-rollback")
            final = await job.result
            failure = None if final.status is Status.RUNNING else final.error_message
        except RivetrError as exc:
            failure = str(exc)
        if failure is None:
            self._rolled_back(watch.Switch(new=new, previous=final, host_header=switch.host_header,
                                           policy=switch.policy), reason)
            await promote.retire(self._runtime, self._routes, new, self._settings.drain_timeout,
                                 self._settings.stop_timeout)
            return
        # Nothing works: say so (503 and a crashed state that survives restarts) rather than
        # keep routing to the failed release, which would answer 502 with no explanation.
        why = f"{reason}; the rollback to #{previous.id} failed too: {failure}"
        log.error("%s: %s", app.name, why)
        await self._store.set_status(new.id, Status.RUNNING, error_message=why)
        await self._store.set_crashed(app.id, why)
        self._routes.set(promote.upstream_of(new, crashed=True))
        self._notifier.notify("container.crashed", app, deployment_id=new.id,
                              commit=new.commit_sha, reason=why)

    def _rolled_back(self, switch: watch.Switch, reason: str) -> None:
        assert switch.previous is not None  # only then is a rollback possible
        self._spawn(self._notify_rollback(switch, reason))

    async def _notify_rollback(self, switch: watch.Switch, reason: str) -> None:
        app = await self._store.get_app(switch.new.app_name)
        back = switch.previous
        assert back is not None
        self._notifier.notify("deploy.rolled_back", app, deployment_id=back.id,
                              commit=back.commit_sha, failed_deployment_id=switch.new.id,
                              reason=reason, url=self.app_url(app.name))

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
            await compose.down(self._runtime, self._compose_dir,
                               container_name(self._instance, job.app.name, d.id))
            if image is not None:
                async with self._gate.removing():
                    await self._runtime.remove_image(image)
        except RivetrError as exc:
            # Start-up reconciliation removes what is left by label.
            log.warning("cleanup of deployment #%s incomplete: %s", d.id, exc)
        await self._store.set_status(d.id, Status.FAILED, error_message=f"{stage}: {reason}")
        current = await self._store.current_deployment(job.app)
        branch = job.app.deploy_branch or self._settings.deploy_branch
        # A rollback moved no branch, so it has none to put back.
        moved = d.rollback_of is None and await self._repos.reset_branch(
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
        self._notifier.notify("deploy.failed", job.app, deployment_id=d.id, commit=d.commit_sha,
                              stage=stage, reason=reason)
