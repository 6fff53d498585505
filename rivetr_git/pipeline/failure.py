"""The one clean-up of a failed deployment: nothing half-done survives it.

Used when a deployment fails while it runs and, at start-up, for deployments a crash or
a restart interrupted (pipeline/reconcile.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rivetr_git.errors import RivetrError
from rivetr_git.models import App, Deployment, Status
from rivetr_git.pipeline.after_switch.cleanup import BuildGate
from rivetr_git.pipeline.builders import compose
from rivetr_git.pipeline.labels import container_name, labels
from rivetr_git.runtime.base import Runtime
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Undone:
    """What a failed deployment's clean-up left in place."""

    current: Deployment | None  # the release that keeps serving
    branch: str  # the app's deploy branch
    moved: bool  # the branch was put back (to `current`, or deleted when there is none)


class FailureCleanup:
    """Removes a failed deployment's container(s), compose group and built images, records
    it failed and puts the deploy branch back at the live release's commit."""

    def __init__(
        self,
        store: Store,
        repos: Repos,
        runtime: Runtime,
        instance: str,
        compose_dir: Path,
        default_branch: str,
        gate: BuildGate,
    ) -> None:
        self._store = store
        self._repos = repos
        self._runtime = runtime
        self._instance = instance
        self._compose_dir = compose_dir
        self._default_branch = default_branch
        self._gate = gate

    async def undo(
        self,
        app: App,
        d: Deployment,
        image: str | None,
        error: str,
        cancelled_by: str | None = None,
        stage: str = "",
    ) -> Undone:
        """`image` is one this deployment built (never a rollback's: that is a release's
        image); `error` becomes the deployment's error_message, prefixed by the `stage` it
        failed at; one `cancelled_by` a key is recorded as cancelled."""
        await self._discard(app, d, image)
        if cancelled_by is not None:
            await self._store.set_status(
                d.id, Status.CANCELLED, error_message=error, cancelled_by=cancelled_by
            )
        else:
            error = f"{stage}: {error}" if stage else error
            await self._store.set_status(d.id, Status.FAILED, error_message=error)
        current = await self._store.current_deployment(app)
        branch = app.deploy_branch or self._default_branch
        # A rollback or restart moved no branch, so it has none to put back.
        moved = d.rollback_of is None and await self._repos.reset_branch(
            app.name,
            branch,
            expected=d.commit_sha,
            to=current.commit_sha if current else None,
        )
        return Undone(current=current, branch=branch, moved=moved)

    async def _discard(self, app: App, d: Deployment, image: str | None) -> None:
        try:
            for container in await self._runtime.list_containers(
                labels(self._instance, app.name, d.id)
            ):
                await self._runtime.remove(container.id)
            await compose.down(
                self._runtime, self._compose_dir, container_name(self._instance, app.name, d.id)
            )
            # Also the untagged results of build stages that finished before the failure.
            doomed = [
                *([image] if image is not None else []),
                *await self._runtime.list_labelled_images(labels(self._instance, app.name, d.id)),
            ]
            if doomed:
                async with self._gate.removing():
                    for each in doomed:
                        await self._runtime.remove_image(each)
        except RivetrError as exc:
            # Start-up reconciliation removes what is left by label.
            log.warning("cleanup of deployment #%s incomplete: %s", d.id, exc)
