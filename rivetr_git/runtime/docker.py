"""The Docker runtime, on docker-py. Every blocking call runs in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import os
import random
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import docker.types
import requests.exceptions

from rivetr_git.errors import RuntimeOperationError, RuntimeUnavailable
from rivetr_git.runtime import docker_tty
from rivetr_git.runtime.base import (
    LABEL_APP,
    LABEL_INSTANCE,
    BuildSpec,
    ContainerInfo,
    ContainerSpec,
    Terminal,
)
from rivetr_git.runtime.docker_build import build_image
from rivetr_git.runtime.docker_images import DockerImages, label_filters
from rivetr_git.runtime.docker_remove import listed, remove_container
from rivetr_git.runtime.docker_routes import host_routes
from rivetr_git.runtime.docker_services import DockerServices
from rivetr_git.runtime.docker_storage import DockerVolumes, storage_options
from rivetr_git.runtime.docker_streams import OnOutput, pump

T = TypeVar("T")

APP_SUBNET_PREFIX = 26  # 62 addresses per app: releases side by side, one-off runs
_NETWORK_TRIES = 12  # a free subnet can be taken meanwhile by a concurrent start


def _limits(spec: ContainerSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if spec.cpus is not None:
        limits["nano_cpus"] = int(spec.cpus * 1e9)
    if spec.memory is not None:
        limits["mem_limit"] = spec.memory
        limits["memswap_limit"] = spec.memory  # no swap on top: the limit means what it says
    return limits


def _info(container: Any) -> ContainerInfo:
    return _info_from(container.attrs)


def _info_from(attrs: dict[str, Any]) -> ContainerInfo:
    state = attrs.get("State", {})
    host_port: int | None = None
    for bindings in (attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
        for binding in bindings or ():
            if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", "") and binding.get("HostPort"):
                host_port = int(binding["HostPort"])
                break
        if host_port:
            break
    image = attrs.get("Config", {}).get("Image", "")
    return ContainerInfo(
        id=attrs["Id"],
        name=attrs.get("Name", "").lstrip("/"),
        image=image,
        running=bool(state.get("Running")),
        exit_code=state.get("ExitCode") if not state.get("Running") else None,
        host_port=host_port,
        labels=dict(attrs.get("Config", {}).get("Labels") or {}),
        started_at=state.get("StartedAt") or None,
    )


class DockerRuntime(DockerVolumes, DockerServices, DockerImages):
    """Runtime on a Docker engine reached through docker-py (DOCKER_HOST or the default socket)."""

    name = "docker"
    engine_env: Mapping[str, str] = {}  # the CLIs' default (DOCKER_HOST) is this engine too
    network_pool: ipaddress.IPv4Network | None = None
    container_ulimits: Mapping[str, int] = {}
    log_options: Mapping[str, str] = {}

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    async def connect(cls) -> DockerRuntime:
        return cls(await cls.client_for(None))

    @staticmethod
    async def client_for(url: str | None) -> Any:
        """A docker-py client for the engine API at `url` (None: DOCKER_HOST or the default
        socket) that has answered a ping. Raises RuntimeUnavailable."""

        def _connect() -> Any:
            client = (
                docker.from_env(timeout=120)
                if url is None
                else docker.DockerClient(base_url=url, timeout=120)
            )
            try:
                client.ping()
            except BaseException:
                client.close()
                raise
            return client

        try:
            return await asyncio.to_thread(_connect)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise RuntimeUnavailable(
                f"cannot reach the {'Docker engine' if url is None else url} ({exc}); start "
                "it (e.g. `dockerd &`) or set DOCKER_HOST"
            ) from None

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"docker {what} failed: {exc.explanation or exc}") from None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise RuntimeUnavailable(f"docker {what} failed: {exc}") from None

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def build(self, spec: BuildSpec, on_line: Callable[[str], None]) -> str:
        return await build_image(self._client.api, spec, on_line)

    async def exposed_ports(self, image: str) -> list[int]:
        img = await self._call("inspect image", lambda: self._client.images.get(image))
        ports = (img.attrs.get("Config") or {}).get("ExposedPorts") or {}
        return sorted(int(p.split("/")[0]) for p in ports if p.endswith("/tcp"))

    async def run(self, spec: ContainerSpec) -> ContainerInfo:
        def _run() -> dict[str, Any]:
            # The low-level API: create, start, inspect. containers.run() inspects once more.
            # init: a PID-1 app ignores SIGTERM, and every stop would wait out the whole
            # grace period (10 s measured here without it).
            api = self._client.api
            ports = [spec.port] if spec.port else []
            host_config = api.create_host_config(
                port_bindings={p: ("127.0.0.1", spec.host_port or None) for p in ports},
                init=True,
                **_limits(spec),
                **self._host_options(),
                **self._network_of(spec),
                **storage_options(spec, self.log_options),
            )
            created = api.create_container(
                spec.image,
                command=list(spec.command) if spec.command else None,
                name=spec.name,
                environment=dict(spec.env),
                labels=dict(spec.labels),
                ports=ports,
                host_config=host_config,
                detach=True,
            )
            api.start(created["Id"])
            return dict(api.inspect_container(created["Id"]))

        return _info_from(await self._call("run", _run))

    def _host_options(self) -> dict[str, Any]:
        """More HostConfig for app containers (engine-specific); none on Docker."""
        return {}

    def _network_options(self) -> dict[str, str]:
        """Driver options for app networks (engine-specific); none on Docker, whose bridge
        networks cannot reach each other already."""
        return {}

    def _network_of(self, spec: ContainerSpec) -> dict[str, Any]:
        """HostConfig joining the spec's network, made first if missing (in a worker
        thread: called from one)."""
        if spec.network is None:
            return {}
        api = self._client.api
        try:
            api.inspect_network(spec.network)
        except docker.errors.NotFound:
            self._create_network(spec)
        return {"network_mode": spec.network}

    def _create_network(self, spec: ContainerSpec) -> None:
        assert spec.network is not None
        api = self._client.api
        labels = {k: v for k, v in spec.labels.items() if k in (LABEL_INSTANCE, LABEL_APP)}
        for attempt in range(_NETWORK_TRIES):
            subnet = self._free_subnet(spread=1 if attempt == 0 else 8)
            ipam = (
                docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
                if subnet
                else None
            )
            try:
                api.create_network(
                    spec.network,
                    driver="bridge",
                    labels=labels,
                    ipam=ipam,
                    options=self._network_options() or None,
                    check_duplicate=True,
                )
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # made meanwhile by a concurrent start
                    return
                if subnet and attempt + 1 < _NETWORK_TRIES:
                    continue  # the subnet was taken meanwhile (another app, another server)
                if "address pool" in str(exc.explanation or exc):
                    raise RuntimeOperationError(
                        f"cannot create network {spec.network}: the engine has no address "
                        "range left (each app has a network of its own); set app_networks "
                        "to a private range, e.g. 10.213.0.0/16"
                    ) from None
                raise

    def host_routes(self) -> list[ipaddress.IPv4Network]:
        """The IPv4 networks this host routes to directly (the engine is local)."""
        return host_routes(Path("/proc/net/route"))

    def _free_subnet(self, spread: int = 1) -> str | None:
        """A /26 of `network_pool` that no network of the engine overlaps (None: no pool,
        the engine picks): the first, or one of the first `spread` free ones at random (on a
        retry, so that servers starting apps at once stop picking the same one)."""
        pool = self.network_pool
        if pool is None:
            return None
        used = [
            ipaddress.ip_network(config["Subnet"], strict=False)
            for network in self._client.api.networks()
            for config in ((network.get("IPAM") or {}).get("Config") or [])
            if config.get("Subnet")
        ]
        # Also what the host routes already: another engine's bridges (Docker's next to
        # Podman's share the host), which Podman refuses to overlap ("subnet ... is already
        # used on the host").
        used4 = [u for u in used if isinstance(u, ipaddress.IPv4Network)] + self.host_routes()
        free = []
        for candidate in pool.subnets(new_prefix=max(pool.prefixlen, APP_SUBNET_PREFIX)):
            if not any(candidate.overlaps(u) for u in used4):
                free.append(str(candidate))
                if len(free) == spread:
                    break
        if free:
            return random.choice(free)
        raise RuntimeOperationError(
            f"app_networks {pool} is full ({len(used4)} networks on the engine); destroy "
            "unused apps or set app_networks to a larger private range"
        )

    async def start(self, container_id: str) -> ContainerInfo:
        def _start() -> Any:
            container = self._client.containers.get(container_id)
            container.start()
            container.reload()
            return container

        return _info(await self._call("start", _start))

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        def _get() -> Any:
            try:
                return self._client.containers.get(container_id)
            except docker.errors.NotFound:
                return None

        container = await self._call("inspect", _get)
        return _info(container) if container is not None else None

    async def stop(self, container_id: str, timeout: int) -> None:
        def _stop() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.api.stop(container_id, timeout=timeout)

        await self._call("stop", _stop)

    async def remove(self, container_id: str) -> None:
        await self._call("remove", lambda: remove_container(self._client.api, container_id))

    async def remove_image(self, image: str) -> None:
        def _remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.images.remove(image, force=False, noprune=False)

        await self._call("remove image", _remove)

    async def logs(self, container_id: str, tail: int) -> str:
        def _logs() -> str:
            try:
                raw = self._client.api.logs(container_id, tail=tail, stdout=True, stderr=True)
            except docker.errors.NotFound:
                return ""
            return bytes(raw).decode("utf-8", "replace")

        return await self._call("logs", _logs)

    async def exec(self, container_id: str, command: list[str]) -> tuple[int, str]:
        def _exec() -> tuple[int, str]:
            container = self._client.containers.get(container_id)
            code, output = container.exec_run(command, stdout=True, stderr=True)
            return int(code), bytes(output).decode("utf-8", "replace")

        return await self._call("exec", _exec)

    async def follow_logs(
        self, container_id: str, tail: int | None, follow: bool, on_output: OnOutput
    ) -> None:
        def _open() -> Any:
            return self._client.api.logs(
                container_id, stream=True, follow=follow, tail="all" if tail is None else tail
            )

        try:
            await pump(_open, on_output)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise RuntimeOperationError(f"docker logs failed: {exc.explanation or exc}") from None

    def _create_oneoff(self, spec: ContainerSpec, command: list[str], **tty: Any) -> str:
        """Create (not start) a one-off container: no published port, init as PID 1."""
        api = self._client.api
        host_config = api.create_host_config(
            init=True,
            **_limits(spec),
            **self._host_options(),
            **self._network_of(spec),
            **storage_options(spec, self.log_options),
        )
        created = api.create_container(
            spec.image,
            command=command,
            name=spec.name,
            environment=dict(spec.env),
            labels=dict(spec.labels),
            host_config=host_config,
            detach=True,
            **tty,
        )
        return str(created["Id"])

    async def run_once(self, spec: ContainerSpec, command: list[str], on_output: OnOutput) -> int:
        api = self._client.api

        def _create() -> str:
            container_id = self._create_oneoff(spec, command)
            api.start(container_id)
            return container_id

        container_id = await self._call("run", _create)
        try:
            # The log stream ends when the container exits; logs=all includes early output.
            await pump(lambda: api.logs(container_id, stream=True, follow=True), on_output)
            result = await self._call("wait", lambda: api.wait(container_id, timeout=60))
            return int(result.get("StatusCode", 1))
        finally:
            await asyncio.shield(self.remove(container_id))

    async def run_console(self, spec: ContainerSpec, command: list[str], terminal: Terminal) -> int:
        spec = dataclasses.replace(spec, env={**spec.env, "TERM": terminal.term})
        return await docker_tty.run(
            self._client.api,
            lambda: self._create_oneoff(spec, command, tty=True, stdin_open=True),
            terminal,
            self._call,
            self.remove,
        )

    async def exec_console(self, container_id: str, command: list[str], terminal: Terminal) -> int:
        return await docker_tty.exec_in(
            self._client.api, container_id, command, terminal, self._call
        )

    async def exec_stream(
        self, container_id: str, command: list[str], on_output: OnOutput, timeout: float
    ) -> int | None:
        api = self._client.api
        exec_id = await self._call("exec", lambda: api.exec_create(container_id, command)["Id"])
        try:
            async with asyncio.timeout(timeout):
                await pump(
                    lambda: api.exec_start(exec_id, stream=True),
                    on_output,
                    close=lambda stream: None,
                )
        except TimeoutError:
            # Docker cannot kill an exec'd process; its host PID can be (the engine is local).
            pid = (await self._call("exec", lambda: api.exec_inspect(exec_id))).get("Pid")
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
            return None
        info = await self._call("exec", lambda: api.exec_inspect(exec_id))
        code = info.get("ExitCode")
        return int(code) if code is not None else None

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        def _list() -> list[ContainerInfo]:
            # ignore_removed: a container removed between the list and its inspect is skipped,
            # not an error that aborts the whole listing.
            found = listed(
                lambda: self._client.containers.list(
                    all=True, filters=label_filters(labels), ignore_removed=True
                )
            )
            return [_info(c) for c in found]

        return await self._call("list containers", _list)

    async def list_networks(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        def _list() -> dict[str, Mapping[str, str]]:
            found = self._client.api.networks(filters=label_filters(labels))
            return {str(n["Name"]): dict(n.get("Labels") or {}) for n in found}

        return await self._call("list networks", _list)

    async def remove_network(self, name: str) -> None:
        def _remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.api.remove_network(name)

        await self._call("remove network", _remove)

    async def list_images(self, repository: str) -> list[str]:
        def _list() -> list[str]:
            found = self._client.images.list(name=repository)
            prefix = repository + ":"
            return [tag for img in found for tag in img.tags if tag.startswith(prefix)]

        return await self._call("list images", _list)
