"""Keeps disk use bounded: old release images of an app go once newer ones are live."""

from __future__ import annotations

import logging

from rivetr_git.errors import RivetrError
from rivetr_git.pipeline.labels import labels
from rivetr_git.runtime.base import Runtime

log = logging.getLogger(__name__)


def _deployment_of(tag: str) -> int | None:
    _, _, suffix = tag.rpartition(":")
    return int(suffix) if suffix.isdigit() else None


async def prune_release_images(runtime: Runtime, instance: str, app: str, keep: int) -> None:
    """Remove the app's images except the newest `keep` releases (the live one included)."""
    try:
        tags = await runtime.list_images(labels(instance, app))
        numbered = sorted(
            ((n, t) for t in tags if (n := _deployment_of(t)) is not None), reverse=True
        )
        for _, tag in numbered[keep:]:
            await runtime.remove_image(tag)
        await runtime.prune_dangling_images(labels(instance, app))
    except RivetrError as exc:
        # The next deploy tries again; a full disk must not fail a deploy that succeeded.
        log.warning("could not prune old images of %s: %s", app, exc)
