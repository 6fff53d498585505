"""Docker (and Podman's compatible API): finding images by label, untagged ones included."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def label_filters(labels: Mapping[str, str]) -> dict[str, list[str]]:
    """docker-py's `filters` for the objects carrying every label in `labels`."""
    return {"label": [f"{k}={v}" for k, v in labels.items()]}


def labelled_images(api: Any, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
    """The images carrying every label in `labels` (docker-py's low-level `api`): id -> all
    its labels. Podman 4.3's compatible API finds no image when given two label filters
    at once (one works), so the engine is asked for the first and the rest is checked here.
    Without `all`: an image other images are built on is not a stage's result."""
    found: dict[str, Mapping[str, str]] = {}
    for image in api.images(filters=label_filters(dict(list(labels.items())[:1]))):
        tags = dict(image.get("Labels") or {})
        if all(tags.get(k) == v for k, v in labels.items()):
            found[str(image["Id"])] = tags
    return found


class DockerImages:
    """Image calls of the Runtime protocol, mixed into DockerRuntime."""

    # Provided by DockerRuntime.
    _client: Any
    _call: Callable[..., Any]

    async def list_labelled_images(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        result: dict[str, Mapping[str, str]] = await self._call(
            "list images", lambda: labelled_images(self._client.api, labels)
        )
        return result
