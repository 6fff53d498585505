"""Docker (and Podman's compatible API): app volumes, the mounts and log caps of containers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import docker.errors
import docker.types

from rivetr_git.errors import RuntimeOperationError
from rivetr_git.runtime.base import ContainerSpec
from rivetr_git.runtime.docker_images import label_filters
from rivetr_git.runtime.docker_remove import listed

T = TypeVar("T")


def storage_options(spec: ContainerSpec, log_options: Mapping[str, str]) -> dict[str, Any]:
    """HostConfig for the spec's mounts and the server's log caps (json-file options)."""
    options: dict[str, Any] = {}
    if spec.mounts:
        options["mounts"] = [
            docker.types.Mount(m.target, m.source, type="bind" if m.bind else "volume")
            for m in spec.mounts
        ]
    if log_options:
        options["log_config"] = docker.types.LogConfig(
            type=docker.types.LogConfig.types.JSON, config=dict(log_options)
        )
    return options


class DockerVolumes:
    """Volume calls of the Runtime protocol, mixed into DockerRuntime."""

    # Provided by DockerRuntime.
    _client: Any
    _call: Callable[..., Any]

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        def _create() -> dict[str, str]:
            try:
                found = self._client.api.inspect_volume(name)
            except docker.errors.NotFound:
                self._client.api.create_volume(name, driver="local", labels=dict(labels))
                return dict(labels)
            return dict(found.get("Labels") or {})

        found: dict[str, str] = await self._call("create volume", _create)
        others = {k: found.get(k) for k, v in labels.items() if found.get(k) != v}
        if others:
            # Names can meet (app a's volume b-data, app a-b's volume data): never share one.
            raise RuntimeOperationError(
                f"volume {name} exists and is not this one ({others}); choose another volume name"
            )

    async def list_volumes(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        def _list() -> dict[str, Mapping[str, str]]:
            found = self._client.api.volumes(filters=label_filters(labels)).get("Volumes") or []
            return {str(v["Name"]): dict(v.get("Labels") or {}) for v in found}

        result: dict[str, Mapping[str, str]] = await self._call("list volumes", _list)
        return result

    async def volume_sizes(self) -> dict[str, int]:
        def _sizes() -> dict[str, int]:
            volumes = listed(self._client.api.df).get("Volumes") or []
            return {
                str(v["Name"]): int((v.get("UsageData") or {}).get("Size", -1))
                for v in volumes
                if int((v.get("UsageData") or {}).get("Size", -1)) >= 0
            }

        result: dict[str, int] = await self._call("measure volumes", _sizes)
        return result

    async def remove_volume(self, name: str) -> None:
        def _remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.api.remove_volume(name)

        await self._call("remove volume", _remove)
