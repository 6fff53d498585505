"""Test doubles for the pure-logic unit tests (tests/test_deploy_logic.py), named as such.

`FakeRuntime` implements the Runtime protocol in memory: images are tags in a set,
containers are records with labels. A running fake container is a tiny HTTP server on
127.0.0.1:<free port>, so the real health check and the real watch probe it over TCP as
they would a real one. Knobs make a build fail, a container exit at once or later, and a
container answer its health check with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

import pygit2

from rivetr_git.errors import BuildFailed, RuntimeOperationError
from rivetr_git.models import App
from rivetr_git.notify import Notifier
from rivetr_git.runtime.base import (
    LABEL_APP,
    LABEL_DEPLOYMENT,
    LABEL_INSTANCE,
    BuildSpec,
    ContainerInfo,
    ContainerSpec,
    OnOutput,
    Terminal,
)
from rivetr_git.store.repos import Repos


@dataclass
class FakeContainer:
    id: str
    spec: ContainerSpec
    running: bool = False
    exit_code: int | None = None
    status: int = 200  # what its HTTP server answers
    server: asyncio.Server | None = None
    host_port: int | None = None
    output: list[str] = field(default_factory=list)

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            id=self.id,
            name=self.spec.name,
            image=self.spec.image,
            running=self.running,
            exit_code=self.exit_code,
            host_port=self.host_port if self.running else None,
            labels=dict(self.spec.labels),
        )


class FakeRuntime:
    """The Runtime protocol in memory (a test double: no engine behind it)."""

    name = "fake"
    engine_env: Mapping[str, str] = {}
    container_ulimits: Mapping[str, int] = {}
    log_options: Mapping[str, str] = {}
    network_pool: IPv4Network | None = None

    def __init__(self) -> None:
        self.images: set[str] = set()
        # Untagged images by id -> labels: what a multi-stage build leaves of its build stage.
        self.stage_images: dict[str, dict[str, str]] = {}
        self.leaves_stages = False  # builds leave a labelled stage image, failed ones too
        self.containers: dict[str, FakeContainer] = {}
        self.build_error: str | None = None  # the next builds fail with this message
        self.exit_on_start: int | None = None  # new containers exit at once with this code
        self.answer_status = 200  # what new containers answer
        self.build_gate: asyncio.Event | None = None  # set: builds wait for it
        self.builds: list[str] = []  # tags, in the order their builds started
        self.building = 0  # builds running now
        self.most_building = 0  # the most builds that ran at once
        self._ids = itertools.count(1)
        self.networks: dict[str, Mapping[str, str]] = {}  # name -> labels, as runs create them
        self.volumes: dict[str, Mapping[str, str]] = {}  # name -> labels

    # --- knobs for tests -----------------------------------------------------------------

    async def crash(self, container_id: str, exit_code: int = 1) -> None:
        """The container's process exits."""
        await self._halt(self.containers[container_id], exit_code)

    def answer(self, container_id: str, status: int) -> None:
        """From now on the container answers every request with `status`."""
        self.containers[container_id].status = status

    def running(self) -> list[FakeContainer]:
        return [c for c in self.containers.values() if c.running]

    # --- the Runtime protocol --------------------------------------------------------------

    async def build(self, spec: BuildSpec, on_line: Callable[[str], None]) -> str:
        self.builds.append(spec.tag)
        self.building += 1
        self.most_building = max(self.most_building, self.building)
        try:
            on_line(f"Step 1/1 : fake build of {spec.tag}")
            if self.build_gate is not None:
                await self.build_gate.wait()
            if self.leaves_stages:  # as the built-in builder's recipes label it
                repository, _, deployment = spec.tag.rpartition(":")
                instance, _, app = repository.removeprefix("rivetr-").partition("/")
                self.stage_images[f"sha256:stage-{deployment}"] = {
                    LABEL_INSTANCE: instance,
                    LABEL_APP: app,
                    LABEL_DEPLOYMENT: deployment,
                }
            if self.build_error is not None:
                raise BuildFailed(self.build_error)
            self.images.add(spec.tag)
            return f"sha256:{spec.tag}"
        finally:
            self.building -= 1

    async def exposed_ports(self, image: str) -> list[int]:
        return []

    async def run(self, spec: ContainerSpec) -> ContainerInfo:
        if spec.image not in self.images:
            raise RuntimeOperationError(f"no such image: {spec.image}")
        container = FakeContainer(
            id=f"fake{next(self._ids):08x}", spec=spec, status=self.answer_status
        )
        self.containers[container.id] = container
        if spec.network is not None:  # the engine makes the app's network on first use
            self.networks.setdefault(
                spec.network,
                {k: v for k, v in spec.labels.items() if k in (LABEL_INSTANCE, LABEL_APP)},
            )
        if self.exit_on_start is not None:
            container.output.append("fake: exiting at once")
            container.exit_code = self.exit_on_start
            return container.info()
        await self._serve(container)
        return container.info()

    async def start(self, container_id: str) -> ContainerInfo:
        container = self.containers[container_id]
        if not container.running:
            await self._serve(container)
        return container.info()

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        container = self.containers.get(container_id)
        return container.info() if container else None

    async def stop(self, container_id: str, timeout: int) -> None:
        container = self.containers.get(container_id)
        if container is not None and container.running:
            await self._halt(container, 0)

    async def remove(self, container_id: str) -> None:
        container = self.containers.pop(container_id, None)
        if container is not None:
            await self._halt(container, 137)

    async def remove_image(self, image: str) -> None:
        self.images.discard(image)
        self.stage_images.pop(image, None)

    async def logs(self, container_id: str, tail: int) -> str:
        container = self.containers.get(container_id)
        return "\n".join(container.output[-tail:]) if container else ""

    async def exec(self, container_id: str, command: list[str]) -> tuple[int, str]:
        return 0, ""

    async def follow_logs(
        self, container_id: str, tail: int | None, follow: bool, on_output: OnOutput
    ) -> None:
        await on_output((await self.logs(container_id, tail or 1000)).encode())

    async def run_once(self, spec: ContainerSpec, command: list[str], on_output: OnOutput) -> int:
        return 0

    async def run_console(self, spec: ContainerSpec, command: list[str], terminal: Terminal) -> int:
        return 0

    async def exec_console(self, container_id: str, command: list[str], terminal: Terminal) -> int:
        return 0

    async def exec_stream(
        self, container_id: str, command: list[str], on_output: OnOutput, timeout: float
    ) -> int | None:
        await on_output(f"fake exec: {command[-1]}\n".encode())
        return 0

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return [
            c.info()
            for c in self.containers.values()
            if all(c.spec.labels.get(k) == v for k, v in labels.items())
        ]

    async def list_images(self, repository: str) -> list[str]:
        return sorted(t for t in self.images if t.rpartition(":")[0] == repository)

    async def list_labelled_images(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        return {
            image: tags
            for image, tags in self.stage_images.items()
            if all(tags.get(k) == v for k, v in labels.items())
        }

    async def list_networks(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        return {
            name: tags
            for name, tags in self.networks.items()
            if all(tags.get(k) == v for k, v in labels.items())
        }

    async def remove_network(self, name: str) -> None:
        self.networks.pop(name, None)

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        found = self.volumes.setdefault(name, dict(labels))
        if any(found.get(k) != v for k, v in labels.items()):
            raise RuntimeOperationError(f"volume {name} exists and is not this one")

    async def list_volumes(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        return {
            name: tags
            for name, tags in self.volumes.items()
            if all(tags.get(k) == v for k, v in labels.items())
        }

    async def volume_sizes(self) -> dict[str, int]:
        return {name: 0 for name in self.volumes}

    async def remove_volume(self, name: str) -> None:
        self.volumes.pop(name, None)

    async def ensure_image(self, image: str) -> None:
        return None  # backing services run on Docker only (tests/test_services.py)

    async def connect_network(
        self, container_id: str, network: str, aliases: list[str], labels: Mapping[str, str]
    ) -> None:
        raise RuntimeOperationError("the fake runtime runs no backing services")

    async def disconnect_network(self, container_id: str, network: str) -> None:
        raise RuntimeOperationError("the fake runtime runs no backing services")

    async def exec_io(
        self,
        container_id: str,
        command: list[str],
        on_stdout: OnOutput,
        stdin: AsyncIterator[bytes] | None = None,
    ) -> tuple[int, bytes]:
        raise RuntimeOperationError("the fake runtime runs no backing services")

    async def close(self) -> None:
        for container in list(self.containers.values()):
            await self._halt(container, 137)

    # --- the fake container's HTTP server ------------------------------------------------

    async def _serve(self, container: FakeContainer) -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while (await reader.readline()).strip():
                    pass  # the request line and headers
                writer.write(
                    f"HTTP/1.1 {container.status} X\r\nContent-Length: 0\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                await writer.drain()
            writer.close()

        container.server = await asyncio.start_server(answer, "127.0.0.1", 0)
        container.host_port = container.server.sockets[0].getsockname()[1]
        container.running, container.exit_code = True, None

    async def _halt(self, container: FakeContainer, exit_code: int) -> None:
        if container.server is not None:
            container.server.close()
            await container.server.wait_closed()
            container.server = None
        if container.running:
            container.running, container.exit_code = False, exit_code


class RecordingNotifier(Notifier):
    """A Notifier that records events instead of sending them (a test double)."""

    events: list[tuple[str, str, dict[str, Any]]]

    def notify(self, event: str, app: App, **fields: object) -> None:
        if not hasattr(self, "events"):
            self.events = []
        self.events.append((event, app.name, dict(fields)))

    def names(self) -> list[str]:
        return [event for event, _, _ in getattr(self, "events", [])]


def commit(
    repos: Repos, app: str, files: Mapping[str, str], message: str, branch: str = "main"
) -> str:
    """Commit `files` on top of `branch` in the app's bare repo (as a push would); its sha."""
    repo = pygit2.Repository(str(repos.path(app)))
    builder = repo.TreeBuilder()
    for name, text in files.items():
        builder.insert(name, repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB)
    ref = f"refs/heads/{branch}"
    parents = [repo.references[ref].target] if ref in repo.references else []
    who = pygit2.Signature("test", "test@example.invalid")
    return str(repo.create_commit(ref, who, who, message, builder.write(), parents))
