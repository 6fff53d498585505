"""Keeps disk use bounded: old release images of an app go once newer ones are live.

Identical builds give identical image ids, whatever the app: removing an old release's
last tag can delete the very image a concurrent build has just taken from the cache,
and that build then fails ("unable to find image"). So builds and removals take turns
through a BuildGate: any number of builds at once, or one removal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from rivetr_git.errors import RivetrError
from rivetr_git.pipeline.labels import image_repository
from rivetr_git.runtime.base import Runtime

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


def _deployment_of(tag: str) -> int | None:
    _, _, suffix = tag.rpartition(":")
    return int(suffix) if suffix.isdigit() else None


async def prune_release_images(
    runtime: Runtime, gate: BuildGate, instance: str, app: str, keep: int
) -> None:
    """Remove the app's images except the newest `keep` releases (the live one included)."""
    try:
        tags = await runtime.list_images(image_repository(instance, app))
        numbered = sorted(
            ((n, t) for t in tags if (n := _deployment_of(t)) is not None), reverse=True
        )
        if len(numbered) <= keep:
            return
        async with gate.removing():
            for _, tag in numbered[keep:]:
                await runtime.remove_image(tag)
    except RivetrError as exc:
        # The next deploy tries again; a full disk must not fail a deploy that succeeded.
        log.warning("could not prune old images of %s: %s", app, exc)
