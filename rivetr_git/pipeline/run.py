"""One deployment, through its stages: cloning, building, starting, health check, the
switch, and the post-deploy command. A failure at any stage is cleaned up in one place
(pipeline/failure.py) and reported to the pusher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rivetr_git.errors import BuildFailed, DeployFailed, RivetrError
from rivetr_git.models import App, Deployment, Status
from rivetr_git.notify import Notifier
from rivetr_git.pipeline import (
    app_policy,
    build,
    cancelled,
    checkout,
    compose_release,
    deploy_commands,
    health,
    process_set,
    procfile,
    promote,
    repo_config,
    start,
)
from rivetr_git.pipeline.after_switch import cleanup, watch
from rivetr_git.pipeline.builders import compose
from rivetr_git.pipeline.failure import FailureCleanup
from rivetr_git.pipeline.labels import image_repository, labels
from rivetr_git.pipeline.log import STAGE_TITLES, DeployLog
from rivetr_git.pipeline.mounts import container_mounts
from rivetr_git.pipeline.queue import Job
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import ContainerInfo, Mount, Runtime
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass
class _Run:
    """What one deployment has got so far, stage by stage."""

    job: Job
    app: App
    build_dir: Path
    started: float
    built: str | None = None  # an image this deployment built (removed if it fails)
    image: str = ""
    build_type: str | None = None  # how the image was (or is) built
    result: build.Built | None = None  # the build's outcome (None: a release's image)
    repo: repo_config.RepoConfig | None = None
    processes: procfile.Procfile = field(default_factory=procfile.Procfile)
    container: ContainerInfo | None = None
    replicas: list[ContainerInfo] = field(default_factory=list)  # web.2 .. web.N
    policy: health.HealthPolicy | None = None
    compose_file: str | None = None  # compose: the file its group starts from

    @property
    def d(self) -> Deployment:
        return self.job.deployment

    @property
    def out(self) -> DeployLog:
        return self.job.log


class Runner:
    """Takes one queued deployment through every stage."""

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
        *,
        gate: cleanup.BuildGate,
        failures: FailureCleanup,
        spawn: Spawn,
        on_live: Callable[[watch.Switch], None],
        app_url: Callable[[str], str],
    ) -> None:
        self._settings = settings
        self._store = store
        self._repos = repos
        self._runtime = runtime
        self._routes = routes
        self._instance = instance
        self._notifier = notifier
        self._env_vars = env_vars
        self._gate = gate
        self._failures = failures
        self._spawn = spawn
        self._on_live = on_live
        self._app_url = app_url
        self._build_options = build.BuildOptions.from_settings(settings)
        self._work_dir = settings.data_dir / "tmp"
        self._compose_dir = settings.data_dir / "compose"

    async def run(self, job: Job) -> Deployment:
        """Run `job` to the end; its deployment as recorded (running or failed)."""
        # Settings as they are now, not when the job was queued.
        app = job.app = await self._store.get_app(job.app.name)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(
            tempfile.mkdtemp(prefix=f"build-{app.name}-{job.deployment.id}-", dir=self._work_dir)
        )
        r = _Run(job=job, app=app, build_dir=build_dir, started=time.monotonic())
        self._announce(r)
        try:
            await self._stages(r)
        except DeployFailed as exc:
            await self._fail(r, exc.stage, exc.reason)
        except RivetrError as exc:
            await self._fail(r, r.out.stage, str(exc))
        except asyncio.CancelledError:
            by = job.cancelled_by  # deploys:cancel, else the server is shutting down
            await asyncio.shield(self._fail(r, r.out.stage, "interrupted by shutdown", by))
            if by is None or not cancelled.absorb():
                raise
        except Exception as exc:
            log.exception("deployment #%s crashed", r.d.id)
            await self._fail(r, r.out.stage, f"internal error: {exc!r}")
        finally:
            await asyncio.to_thread(shutil.rmtree, build_dir, True)
            await r.out.close()
        return await self._store.get_deployment(r.d.id)

    def _announce(self, r: _Run) -> None:
        d, app = r.d, r.app
        what = f'{d.commit_sha[:7]} "{d.commit_message}" (deployment #{d.id})'
        if d.kind == "restart":
            r.out.header(f"Restarting {app.name} (release #{d.rollback_of}): {what}")
        elif d.rollback_of is not None:
            r.out.header(f"Rolling back {app.name} to release #{d.rollback_of}: {what}")
        else:
            r.out.header(f"Deploying {app.name} {what}")
        self._notifier.notify(
            "deploy.started",
            app,
            deployment_id=d.id,
            commit=d.commit_sha,
            rollback_of=d.rollback_of,
        )

    async def _stages(self, r: _Run) -> None:
        if r.d.image is not None:
            await self._reuse_image(r, r.d.image)
        else:
            await self._build(r)
            if r.processes.release and r.build_type != "compose":
                await self._release_phase(r)
        await self._start(r)
        await self._check_health(r)
        await self._go_live(r)
        await self._post_deploy(r)
        r.out.header(
            f"Running: {self._app_url(r.app.name)} (live in {time.monotonic() - r.started:.2f}s)"
        )

    async def _reuse_image(self, r: _Run, image: str) -> None:
        """A rollback or restart: the release's image is built, as the release was built."""
        r.image, r.build_type = image, r.d.build_type
        if r.build_type == "compose":  # a whole new group, from the release's images
            r.compose_file = await compose_release.prepare(self._repos, r.d, r.build_dir, r.out)
        r.repo = await self._repo_config(r)
        r.processes = await process_set.load(self._repos, r.app.name, r.d.commit_sha, r.out)

    async def _build(self, r: _Run) -> None:
        """Stages cloning and building."""
        app, d = r.app, r.d
        async with self._stage(r.job, Status.CLONING):
            export = await checkout.checkout(
                self._repos, app.name, d.commit_sha, r.build_dir, r.out
            )
            r.repo = await self._repo_config(r)
            r.processes = await process_set.load(self._repos, r.app.name, r.d.commit_sha, r.out)
        build_env = await app_policy.build_env(self._env_vars, app, d.id, r.out)
        async with self._stage(r.job, Status.BUILDING), self._gate.building():
            try:
                r.result = await build.build(
                    self._runtime,
                    app,
                    d.id,
                    self._instance,
                    export.path,
                    r.out,
                    self._build_options,
                    build_env=build_env,
                    repo_build_type=r.repo.build_type,
                )
            except BuildFailed as exc:
                raise checkout.explain_build_failure(exc, export) from None
            r.image = r.built = r.result.image
            r.build_type = r.result.detection.build_type
            r.compose_file = r.result.detection.compose_file
        await self._store.set_status(d.id, Status.BUILDING, image=r.image, build_type=r.build_type)

    async def _start(self, r: _Run) -> None:
        """Stage starting, the pre-deploy command included."""
        app, d = r.app, r.d
        async with self._stage(r.job, Status.STARTING):
            # A rollback runs the release as it ran then, whatever the settings say now;
            # a restart takes the app's settings as they are.
            ran_with = d.app_port if d.kind == "rollback" else None
            port = ran_with or await start.app_port(self._runtime, r.image, app.port)
            env = await start.release_env(self._env_vars, d.id)
            container = await self._run_container(r, port, env)
            r.container = container
            r.out.info(
                f"container {container.id[:12]} listening on port {port}"
                f"{app_policy.limits_note(app)}"
            )
            if r.build_type != "compose":
                r.replicas = await process_set.start_rest(
                    self._runtime,
                    self._instance,
                    app,
                    d.id,
                    r.image,
                    port,
                    env,
                    r.processes,
                    r.out,
                    await self._mounts(r),
                )
            await self._store.set_status(
                d.id,
                Status.STARTING,
                container_id=container.id,
                host_port=container.host_port,
                app_port=port,
            )
            assert r.repo is not None  # read at cloning (or from the release's commit)
            run = deploy_commands.for_app(self._runtime, self._settings, app, r.repo, r.out)
            if failed := await run(container.id, "pre"):
                raise DeployFailed("pre_deploy", failed)

    async def _run_container(self, r: _Run, port: int, env: dict[str, str]) -> ContainerInfo:
        """The release's container: a compose group's routed service, or the one image."""
        app, d = r.app, r.d
        if r.build_type != "compose":
            web = r.processes.web
            return await start.start(
                self._runtime,
                self._instance,
                app.name,
                d.id,
                r.image,
                port,
                env,
                cpus=app.cpu_limit,
                memory=app.memory_limit,
                mounts=await self._mounts(r),
                command=procfile.shell(web) if web else None,
            )
        compose_file = r.compose_file
        assert compose_file is not None  # detection (or the release's commit) names it
        limits = compose.Limits(
            cpus=app.cpu_limit, memory=app.memory_limit, ulimits=self._runtime.container_ulimits
        )
        return await compose.up(
            self._runtime,
            r.build_dir / "src",
            compose_file,
            self._instance,
            app.name,
            d.id,
            app.compose_service,
            port,
            env,
            r.out,
            self._compose_dir,
            limits,
            app.compose_bind_list,
            image=r.image,  # a restart or rollback: the release's images, not rebuilt
        )

    async def _mounts(self, r: _Run) -> tuple[Mount, ...]:
        """The app's storage, for every container of the release (release phase included)."""
        return await container_mounts(
            self._store, self._instance, r.app, self._settings.storage_root
        )

    async def _release_phase(self, r: _Run) -> None:
        """The Procfile's `release` command, once, before anything of the release starts."""
        assert r.processes.release is not None
        env = await start.release_env(self._env_vars, r.d.id)
        mounts = await self._mounts(r)
        spec = process_set.oneoff_spec(self._instance, r.app, r.d.id, r.image, env, mounts)
        timeout = app_policy.command_timeout(self._settings, r.app)
        await process_set.release_phase(self._runtime, spec, r.processes.release, timeout, r.out)

    async def _check_health(self, r: _Run) -> None:
        container, repo = r.container, r.repo
        assert container is not None and repo is not None  # set by the earlier stages
        assert container.host_port is not None  # start() guarantees a published port
        async with self._stage(r.job, Status.HEALTH_CHECK):
            r.policy = policy = app_policy.health(self._settings, r.app, repo, r.build_type)
            host = self._routes.hostname(r.app.name)
            # Every web container must answer before any of them gets traffic.
            results = await asyncio.gather(
                *(
                    health.wait_healthy(self._runtime, c.id, c.host_port or 0, host, policy)
                    for c in (container, *r.replicas)
                )
            )
            attempts = max(a for a, _ in results)
            what = f"GET {policy.path}" if policy.path else "answered"
            r.out.info(f"{what} ok after {attempts} attempt{'s' if attempts > 1 else ''}")

    async def _go_live(self, r: _Run) -> None:
        """The switch; then the watch, old images pruned, retired compose groups swept."""
        app, d, container, policy = r.app, r.d, r.container, r.policy
        assert container is not None and container.host_port is not None
        assert policy is not None
        fresh = await self._store.get_deployment(d.id)
        others = tuple(("127.0.0.1", c.host_port or 0) for c in r.replicas)
        r.job.switching = True  # deploys:cancel no longer applies
        previous = await promote.promote(
            self._store, self._routes, fresh, container.host_port, others
        )
        self._on_live(
            watch.Switch(
                new=fresh,
                previous=previous,
                host_header=self._routes.hostname(app.name),
                policy=policy,
            )
        )
        if previous is not None and app_policy.auto_rollback(self._settings, app):
            r.out.info(
                f"watching it for {self._settings.watch_window:g}s: if it fails in "
                f"that time, #{previous.id} takes over again"
            )
        keep: set[str] = set()  # the images of the newest keep_releases releases
        for release in await self._store.releases(app):
            if len(keep) == self._settings.keep_releases:
                break
            keep.add(release.image or "")
        # Rows (and logs) beyond keep_deployments go; a kept image's release stays. Never
        # a reason for a live release to count as failed.
        try:
            await self._store.prune_deployments(app, self._settings.keep_deployments, keep)
        except (RivetrError, sqlite3.Error) as exc:
            log.warning("%s: pruning old deployments failed: %s", app.name, exc)
        self._spawn(
            cleanup.prune_release_images(
                self._runtime,
                self._gate,
                image_repository(self._instance, app.name),
                keep,
                labels(self._instance, app.name),
            )
        )
        # Networks of compose groups retired since the app's last deploy.
        await compose.sweep(self._compose_dir, self._runtime, self._instance, app.name)
        self._notifier.notify(
            "deploy.succeeded",
            app,
            deployment_id=d.id,
            commit=d.commit_sha,
            url=self._app_url(app.name),
        )
        r.out.stage = Status.RUNNING.value

    async def _post_deploy(self, r: _Run) -> None:
        """A failing post-deploy command is reported; the release stays live."""
        container = r.container
        assert container is not None and r.repo is not None
        run = deploy_commands.for_app(self._runtime, self._settings, r.app, r.repo, r.out)
        if failed := await run(container.id, "post"):
            await self._store.set_status(r.d.id, Status.RUNNING, post_deploy_error=failed)
            r.out.error(f"{failed}; the release stays live", in_red=True)

    @contextlib.asynccontextmanager
    async def _stage(self, job: Job, status: Status, note: str = "") -> AsyncIterator[None]:
        job.log.stage = status.value
        job.log.header(f"{STAGE_TITLES[status]}... {note}".rstrip())
        await self._store.set_status(job.deployment.id, status)
        began = time.monotonic()
        yield
        job.log.info(f"{STAGE_TITLES[status].lower()} done in {time.monotonic() - began:.2f}s")

    async def _repo_config(self, r: _Run) -> repo_config.RepoConfig:
        text = await self._repos.read_file(r.app.name, r.d.commit_sha, repo_config.FILE_NAME)
        config = repo_config.parse(text)
        if text is not None:
            r.out.info(f"using {repo_config.FILE_NAME} from the repository")
        return config

    async def _fail(
        self, r: _Run, stage: str, reason: str, cancelled_by: str | None = None
    ) -> None:
        """Leave nothing half-done (pipeline/failure.py), and tell the pusher what is left."""
        d, out = r.d, r.out
        if cancelled_by is not None:
            reason = f"Deploy cancelled by {cancelled_by} (at {stage})"
        undone = await self._failures.undo(r.app, d, r.built, reason, cancelled_by, stage)
        current = undone.current
        if current is not None:
            out.error(
                f"The previous release (#{current.id}, {current.commit_sha[:7]}) keeps serving."
            )
        if undone.moved:
            where = current.commit_sha[:7] if current else "its state before this push"
            out.error(
                f"Branch {undone.branch} on the server is back at {where}; push again to retry."
            )
        out.error(reason if cancelled_by else f"Deploy failed at {stage}: {reason}")
        self._notifier.notify(
            "deploy.failed",
            r.app,
            deployment_id=d.id,
            commit=d.commit_sha,
            stage=stage,
            reason=reason,
        )
