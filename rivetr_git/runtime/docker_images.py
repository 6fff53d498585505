"""Docker (and Podman's compatible API): finding images by label, untagged ones included."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def label_filters(labels: Mapping[str, str]) -> dict[str, list[str]]:
    """docker-py's `filters` for the objects carrying every label in `labels`."""
    return {"label": [f"{k}={v}" for k, v in labels.items()]}


class DockerImages:
    """Image calls of the Runtime protocol, mixed into DockerRuntime."""

    # Provided by DockerRuntime.
    _client: Any
    _call: Callable[..., Any]

    async def list_labelled_images(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        def _list() -> dict[str, Mapping[str, str]]:
            # Without `all`: an image other images are built on is not a stage's result.
            found = self._client.api.images(filters=label_filters(labels))
            return {str(i["Id"]): dict(i.get("Labels") or {}) for i in found}

        result: dict[str, Mapping[str, str]] = await self._call("list images", _list)
        return result
