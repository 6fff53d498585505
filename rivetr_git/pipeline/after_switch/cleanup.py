"""Keeps disk use bounded: old release images of an app go once newer ones are live.

Identical builds give identical image ids, whatever the app: removing an old release's
last tag (and its unused parent layers) can delete the very image a concurrent build has
just taken from the cache, and that build then fails ("unable to find image"). So builds
and removals take turns through a BuildGate: any number of builds at once, or one removal.
(Another server sharing the engine is not covered by the gate; rare, and such a build
fails cleanly and can be pushed again.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from rivetr_git.errors import RivetrError
from rivetr_git.models import Status
from rivetr_git.pipeline.labels import labels
from rivetr_git.runtime.base import LABEL_DEPLOYMENT, Runtime
from rivetr_git.store.database import Store

log = logging.getLogger(__name__)


class BuildGate:
    """Shared for builds, exclusive for image removal."""

    def __init__(self) -> None:
        self._builds = 0
        self._removing = False
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def building(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._removing)
            self._builds += 1
        try:
            yield
        finally:
            async with self._changed:
                self._builds -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def removing(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._removing and self._builds == 0)
            self._removing = True
        try:
            yield
        finally:
            async with self._changed:
                self._removing = False
                self._changed.notify_all()


def _release_of(tag: str) -> str:
    """'repo:7-worker' -> 'repo:7'; 'repo:7' stays."""
    repository, _, name = tag.rpartition(":")
    return f"{repository}:{name.partition('-')[0]}"


def _old_stages(
    found: Mapping[str, Mapping[str, str]], repository: str, keep: set[str]
) -> list[str]:
    """The stage images in `found` (id -> labels) whose deployment's release is not kept.
    Those of a deployment newer than every kept release stay: a deploy of the app may be
    building (its stage is the next push's layer cache) or not live yet."""
    newest = max((int(n) for t in keep if (n := t.rpartition(":")[2]).isdigit()), default=0)
    return [
        image
        for image, tags in found.items()
        if (d := tags.get(LABEL_DEPLOYMENT, "")).isdigit()
        and int(d) < newest
        and f"{repository}:{d}" not in keep
    ]


async def prune_release_images(
    runtime: Runtime, gate: BuildGate, repository: str, keep: set[str], owner: Mapping[str, str]
) -> None:
    """Remove the images in `repository` except those in `keep` (the newest releases',
    chosen by the caller from the database: a rollback runs an old tag again). A tag
    `<release>-<service>` (a compose group's other images) goes with its release, and so
    do the untagged images of its build stages (labelled with `owner`, the instance and app
    labels, and the deployment: recipe.stage_end). Docker keeps the parent layers a newer
    build still uses, such as the dependency install the next push takes from the cache."""
    try:
        # Stages first: the tag of the release just replaced is refused while its container
        # is still being stopped (the next deploy removes it), which ends this round.
        doomed = _old_stages(await runtime.list_labelled_images(owner), repository, keep)
        doomed += [t for t in await runtime.list_images(repository) if _release_of(t) not in keep]
        if not doomed:
            return
        async with gate.removing():
            for tag in doomed:
                await runtime.remove_image(tag)
    except RivetrError as exc:
        # The next deploy tries again; a full disk must not fail a deploy that succeeded.
        log.warning("could not prune old images of %s: %s", repository, exc)


async def sweep(
    store: Store, runtime: Runtime, instance: str, tmp_dir: Path, max_age: float
) -> None:
    """Periodic clean-up of what no live or in-flight deployment uses: stopped containers of
    failed and replaced deployments, and build dirs older than `max_age` seconds."""
    finished = {
        d.id
        for d in await store.deployments_with_status(
            [Status.FAILED, Status.REPLACED, Status.CANCELLED]
        )
    }
    for container in await runtime.list_containers(labels(instance)):
        deployment = container.labels.get(LABEL_DEPLOYMENT, "")
        if not container.running and deployment.isdigit() and int(deployment) in finished:
            log.info("removing stopped container %s", container.name)
            await runtime.remove(container.id)
    if tmp_dir.is_dir():
        cutoff = time.time() - max_age
        for entry in tmp_dir.iterdir():
            if entry.stat().st_mtime < cutoff:
                log.info("removing stray build dir %s", entry)
                await asyncio.to_thread(shutil.rmtree, entry, True)
