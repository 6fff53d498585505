"""The pipeline's one object for its callers (pushes, admin verbs, the daemon): it wires
the deploy queue (pipeline/queue.py), the run of one deployment (pipeline/run.py) and the
watch after each switch (pipeline/rollback.py), and queues pushes, rollbacks and restarts.

A deployment belongs to the pipeline, not to the push that asked for it: a pusher who
disconnects stops seeing output, but the deploy still finishes (or fails cleanly) and is
recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from rivetr_git.errors import NotFound, RivetrError, ValidationError
from rivetr_git.models import App, Deployment
from rivetr_git.notify import Notifier
from rivetr_git.pipeline import app_policy, health, procfile, promote, repo_config
from rivetr_git.pipeline.after_switch import cleanup
from rivetr_git.pipeline.after_switch.rollback import AutoRollback
from rivetr_git.pipeline.app_url import app_url
from rivetr_git.pipeline.builders import compose
from rivetr_git.pipeline.failure import FailureCleanup
from rivetr_git.pipeline.labels import image_repository, labels, network_name
from rivetr_git.pipeline.queue import DeployQueue, Job
from rivetr_git.pipeline.run import Runner
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import Runtime
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos

__all__ = ["Deployer", "Job"]


class Deployer:
    """Queues deployments (pushes, rollbacks, restarts) and removes apps."""

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
        self._background: set[asyncio.Task[None]] = set()
        self._gate = cleanup.BuildGate()
        self._compose_dir = settings.data_dir / "compose"
        self._watch = AutoRollback(
            settings,
            store,
            runtime,
            routes,
            notifier,
            self._spawn,
            self.app_url,
            self._queue_rollback,
        )
        failures = FailureCleanup(
            store, repos, runtime, instance, self._compose_dir, settings.deploy_branch, self._gate
        )
        runner = Runner(
            settings,
            store,
            repos,
            runtime,
            routes,
            instance,
            notifier,
            env_vars,
            gate=self._gate,
            failures=failures,
            spawn=self._spawn,
            on_live=self._watch.watch,
            app_url=self.app_url,
        )
        self._queue = DeployQueue(store, runner.run, settings.max_concurrent_deploys)

    def app_url(self, app: str) -> str:
        return app_url(self._settings, self._routes.hostname(app))

    def set_public_port(self, port: int) -> None:
        """Called once the proxy is bound, so URLs show the real port when 0 was asked."""
        if not self._settings.public_port:
            self._settings = replace(self._settings, public_port=port)

    def job(self, deployment_id: int) -> Job | None:
        """A deployment's job while it is queued or runs (its live log), else None."""
        return self._queue.job(deployment_id)

    def observe(self, callback: Callable[[Deployment], None]) -> None:
        """Call `callback` with each finished deployment (metrics)."""
        self._queue.observers.append(callback)

    def finished_elsewhere(self, final: Deployment) -> None:
        """Tell the observers of a deployment that ended before the queue (a failed fetch)."""
        for observe in self._queue.observers:
            observe(final)

    async def submit(self, app: App, sha: str, pushed_by: str | None) -> Job:
        """Record a pending deployment of `sha` and queue it behind the app's earlier ones."""
        info = await self._repos.commit_info(app.name, sha)
        deployment = await self._store.create_deployment(app, sha, info.message, pushed_by)
        return await self._queue.enqueue(app, deployment, by=sha[:7])

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
                raise NotFound(
                    f"{app.name} has no release #{release_id}; `releases {app.name}` lists them"
                )
            target = found[0]
            if current is not None and target.id == current.id:
                raise ValidationError(f"release #{target.id} is already live")
        assert target.image is not None  # releases() only returns deployments with an image
        repository = target.image.rpartition(":")[0]
        if target.image not in await self._runtime.list_images(repository):
            raise NotFound(
                f"the image of release #{target.id} was pruned "
                f"(keep_releases = {self._settings.keep_releases}); pick a newer "
                f"one from `releases {app.name}`"
            )
        deployment = await self._store.create_deployment(
            app,
            target.commit_sha,
            target.commit_message,
            requested_by,
            rollback_of=target,
            kind="rollback",
        )
        return await self._queue.enqueue(app, deployment, by=f"a rollback to #{target.id}")

    async def restart(self, app: App, requested_by: str | None, why: str) -> Job | None:
        """Queue a fresh container of the live release (new env, limits, settings): start,
        health check, switch, drain, like a deploy. None when nothing is live."""
        current = await self._store.current_deployment(app)
        if current is None or current.image is None:
            return None
        deployment = await self._store.create_deployment(
            app,
            current.commit_sha,
            current.commit_message,
            requested_by,
            rollback_of=current,
            kind="restart",
        )
        return await self._queue.enqueue(app, deployment, by=f"a restart ({why})")

    async def cancel(self, app: App, by: str) -> list[Deployment]:
        """Cancel the app's waiting deploys and its running one (pipeline/queue.py)."""
        return await self._queue.cancel(app.name, by)

    async def destroy(self, app: App) -> None:
        """Remove everything of `app`: containers, images, route, repository, rows.

        Refused while one of its deploys runs (it would leave a container behind)."""
        if self._queue.busy(app.name):
            raise ValidationError(
                f"a deploy of {app.name} is running; destroy it once that "
                "has finished (deploys shows it)"
            )
        self._watch.end(app.name)  # nothing is left to roll back to
        # Stopped first: the crash monitor leaves stopped apps alone, so it cannot route the
        # app again (503) when it sees the containers go.
        await self._store.update_app(app.name, stopped=True)
        self._routes.remove(app.name)
        await self._routes.wait_applied(promote.SWITCH_TIMEOUT)  # every proxy process too
        for container in await self._runtime.list_containers(labels(self._instance, app.name)):
            await self._runtime.remove(container.id)
        await self._runtime.remove_network(network_name(self._instance, app.name))
        await compose.remove_all(self._compose_dir, self._runtime, self._instance, app.name)
        async with self._gate.removing():
            # The release images, then the untagged ones of their build stages.
            for image in [
                *await self._runtime.list_images(image_repository(self._instance, app.name)),
                *await self._runtime.list_labelled_images(labels(self._instance, app.name)),
            ]:
                await self._runtime.remove_image(image)
        await self._store.delete_app(app)
        await self._repos.delete(app.name)

    async def health_in_force(self, app: App) -> health.HealthPolicy:
        """The health check the app's next restart would use (its live commit's rivetr.toml
        included)."""
        current = await self._store.current_deployment(app)
        repo = repo_config.RepoConfig()
        if current is not None:
            with contextlib.suppress(RivetrError):
                repo = repo_config.parse(
                    await self._repos.read_file(app.name, current.commit_sha, repo_config.FILE_NAME)
                )
        return app_policy.health(
            self._settings, app, repo, current.build_type if current is not None else None
        )

    async def process_types(self, app: App) -> list[str]:
        """The process types of the live release's Procfile (web only without one)."""
        current = await self._store.current_deployment(app)
        if current is None:
            raise NotFound(f"{app.name} has nothing deployed yet; push to it first")
        raw = await self._repos.read_file(app.name, current.commit_sha, procfile.FILE_NAME)
        return procfile.parse(None if raw is None else raw.decode("utf-8", "replace")).types()

    def health_defaults(self) -> health.HealthPolicy:
        """The server-wide health check, for `apps:info`."""
        return app_policy.health_defaults(self._settings)

    def is_watched(self, deployment_id: int) -> bool:
        """True while a release is inside its post-switch watch window."""
        return self._watch.is_watched(deployment_id)

    async def _queue_rollback(self, app: App, release_id: int, requested_by: str) -> Job:
        return await self.rollback(app, release_id, requested_by)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Cancel running deployments (each records itself as interrupted) and the watches."""
        background = list(self._background)
        for task in background:
            task.cancel()
        await self._queue.close()
        for task in background:
            with contextlib.suppress(BaseException):
                await task
