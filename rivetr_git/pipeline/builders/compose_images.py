"""Which image each service of a compose release runs when the release starts again (a
restart, a rollback): the images its deployment built, never a build.

A deployment tags the image of the service it routed `<tag>` and those of the other services
that build `<tag>-<service>` (compose.rewrite). The service routed now may not be the one
routed then (compose_service changed since): the one building service without an image of
its own was the routed one, so each service still gets its own image.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from rivetr_git.errors import StartFailed
from rivetr_git.runtime.base import Runtime


def building(services: Mapping[str, Any]) -> list[str]:
    """The services of a checked file that build their image (the rest name one)."""
    return [name for name, spec in services.items() if spec and spec.get("build")]


def by_service(
    services: Collection[str], release: str, existing: Collection[str]
) -> dict[str, str]:
    """service -> the image `release` (its routed image tag) built for it, out of the
    images still `existing`. Raises StartFailed when one is gone or cannot be told."""
    found = {s: f"{release}-{s.lower()}" for s in services if f"{release}-{s.lower()}" in existing}
    unmatched = [s for s in services if s not in found]
    if len(unmatched) == 1 and release in existing:
        found[unmatched[0]] = release
    elif unmatched:
        raise StartFailed(
            f"the release {release} has no image left for {', '.join(unmatched)} (pruned, or "
            "the compose file's services changed since it was built); push a commit to build "
            "the group again"
        )
    return found


async def of_release(
    runtime: Runtime, services: Mapping[str, Any], release: str | None
) -> dict[str, str] | None:
    """by_service for the services that build, out of the images on the engine; None for
    no `release` (a deploy runs what it has just built). Raises StartFailed."""
    if release is None:
        return None
    existing = await runtime.list_images(release.rpartition(":")[0])
    return by_service(building(services), release, existing)
