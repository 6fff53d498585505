"""The runtime interface: what the pipeline may ask of a container engine.

The runtime knows nothing about apps, routes or the database: it builds images and runs
containers described by a ContainerSpec, and finds them again by label.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Protocol, runtime_checkable

# Labels every container and image of this server carries, so it can find them again.
LABEL_INSTANCE = "rivetr.instance"
LABEL_APP = "rivetr.app"
LABEL_DEPLOYMENT = "rivetr.deployment"
LABEL_ONEOFF = "rivetr.oneoff"  # a `run` container: removed when it ends
LABEL_VOLUME = "rivetr.volume"  # an app's named volume (storage:mount): its short name
LABEL_SERVICE = "rivetr.service"  # a backing service's container, volume and network


OnOutput = Callable[[bytes], Awaitable[None]]


@runtime_checkable
class Terminal(Protocol):
    """A client's terminal (`ssh -t`), for a console: a command on a pty in a container."""

    term: str  # the client's TERM, e.g. xterm-256color

    def size(self) -> tuple[int, int]:
        """Columns and rows now."""
        ...

    async def read(self) -> bytes:
        """The next keystrokes (Ctrl-C arrives as 0x03); b"" once the client sends no more."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def resized(self) -> tuple[int, int]:
        """Wait for the next window size change: the new columns and rows."""
        ...


@dataclass(frozen=True)
class BuildSpec:
    context_tar: Path  # a tar of the build context (the pushed tree)
    tag: str
    dockerfile: str = "Dockerfile"
    # Limits (None: none). The build stops and fails once it runs longer than `timeout`
    # seconds; every RUN step gets at most `cpus` CPUs and `memory` bytes (swap included).
    timeout: float | None = None
    cpus: float | None = None
    memory: int | None = None
    target: str | None = None  # the stage of a multi-stage Dockerfile to build
    no_cache: bool = False  # ignore the layer cache (it is kept and used otherwise)
    # Build-time values (already decrypted) for the Dockerfile's ARGs. The runtime makes
    # sure none of them is left in the image's history or config.
    build_args: Mapping[str, str] = field(default_factory=dict)
    # The labels the Dockerfile gives its build stages (the built-in builder's recipes).
    # With build args, those stages' images hold the values in their history too: the
    # runtime removes them after the build, as it does the final image's intermediates.
    stage_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mount:
    """A named volume (`bind` False) or a host directory mounted into a container."""

    source: str  # the volume's engine name, or an absolute host directory
    target: str  # an absolute path in the container
    bind: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    port: int  # the port the app listens on inside the container
    # Decrypted env var values: kept out of the repr, so no log line or traceback shows them.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: float | None = None  # CPU limit (None: none)
    memory: int | None = None  # memory limit in bytes, swap included (None: none)
    # The bridge network the container joins instead of the engine's default one, created
    # (labelled with the spec's instance and app labels) when missing. Containers on other
    # networks cannot reach it; its published 127.0.0.1 port still can. None: the default.
    network: str | None = None
    mounts: tuple[Mount, ...] = ()  # the app's storage, the same in every container of it
    # What to run instead of the image's command (a Procfile process); None: the image's.
    command: list[str] | None = None
    host_port: int | None = None  # publish `port` on this 127.0.0.1 port (None: any free one)


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    running: bool
    exit_code: int | None
    host_port: int | None  # the 127.0.0.1 port the app's port is published on
    labels: Mapping[str, str]
    started_at: str | None = None  # ISO 8601, as the engine reports it (for `ps`)


class Runtime(Protocol):
    """A container engine. Every method may raise RuntimeOperationError/RuntimeUnavailable."""

    name: str
    # Where app networks take their subnets (a /26 each); None: the engine's default pools.
    network_pool: IPv4Network | None
    # Environment that points engine CLIs (docker, docker-compose, nixpacks, pack) at this
    # runtime's engine, e.g. DOCKER_HOST; empty: their defaults.
    engine_env: Mapping[str, str]
    # ulimits every app container gets (compose groups too); empty: the engine's defaults.
    container_ulimits: Mapping[str, int]
    # Log driver options every app container gets (json-file max-size/max-file); empty:
    # the engine's defaults (unbounded logs).
    log_options: Mapping[str, str]

    async def build(self, spec: BuildSpec, on_line: Callable[[str], None]) -> str:
        """Build an image, calling `on_line` for each output line; return the image id.

        Raises BuildFailed with the builder's error message.
        """
        ...

    async def exposed_ports(self, image: str) -> list[int]:
        """TCP ports the image declares with EXPOSE."""
        ...

    async def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start a container publishing `spec.port` on 127.0.0.1 (port 0: a
        process with no port, published nowhere)."""
        ...

    async def start(self, container_id: str) -> ContainerInfo:
        """Start an existing, stopped container again."""
        ...

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """Current state of a container, or None if it no longer exists."""
        ...

    async def stop(self, container_id: str, timeout: int) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds. A missing container is not an error."""
        ...

    async def remove(self, container_id: str) -> None:
        """Remove a container (forcefully). A missing container is not an error."""
        ...

    async def remove_image(self, image: str) -> None:
        """Remove an image tag, the image if nothing else uses it, and the parent layers
        nothing else uses. Callers hold the BuildGate: a concurrent build could be taking
        one of those layers from its cache. Missing is not an error."""
        ...

    async def logs(self, container_id: str, tail: int) -> str:
        """The last `tail` lines of a container's output."""
        ...

    async def exec(self, container_id: str, command: list[str]) -> tuple[int, str]:
        """Run a command in a running container; return exit code and combined output."""
        ...

    async def follow_logs(
        self, container_id: str, tail: int | None, follow: bool, on_output: OnOutput
    ) -> None:
        """Feed the container's output (last `tail` lines, None: all) to `on_output`; with
        `follow`, keep going until the container stops or the caller is cancelled."""
        ...

    async def run_once(self, spec: ContainerSpec, command: list[str], on_output: OnOutput) -> int:
        """Run `command` in a new container (no published port), stream its output, remove
        it (also when cancelled) and return its exit code."""
        ...

    async def exec_stream(
        self, container_id: str, command: list[str], on_output: OnOutput, timeout: float
    ) -> int | None:
        """Run a command in a running container, streaming its output; its exit code, or
        None if it ran past `timeout` seconds (it is then killed)."""
        ...

    async def run_console(self, spec: ContainerSpec, command: list[str], terminal: Terminal) -> int:
        """Like run_once, on a pty joined to `terminal` (its keystrokes, output and window
        size); the container is removed when the command ends or the caller is cancelled."""
        ...

    async def exec_console(self, container_id: str, command: list[str], terminal: Terminal) -> int:
        """Run `command` on a pty in a running container, joined to `terminal`; its exit code.
        Cancelling the caller kills the command."""
        ...

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """All containers (running or not) carrying every label in `labels`."""
        ...

    async def list_images(self, repository: str) -> list[str]:
        """Tags ('repository:tag') of the images in `repository`."""
        ...

    async def list_labelled_images(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        """The images carrying every label in `labels`, untagged ones included (the build
        stages of multi-stage builds): id -> all its labels. Images that others are built
        on (a build's intermediate steps) are not listed."""
        ...

    async def list_networks(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        """The networks carrying every label in `labels`: name -> all its labels."""
        ...

    async def remove_network(self, name: str) -> None:
        """Remove a network no container uses any more. Missing is not an error."""
        ...

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        """Create a named volume carrying `labels`; an existing one carrying them is kept as
        it is. Raises RuntimeOperationError if one of that name carries other labels."""
        ...

    async def list_volumes(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        """The volumes carrying every label in `labels`: name -> all its labels."""
        ...

    async def volume_sizes(self) -> dict[str, int]:
        """Bytes used by each volume the engine can measure (may be slow: it walks them)."""
        ...

    async def remove_volume(self, name: str) -> None:
        """Remove a volume no container uses. Missing is not an error."""
        ...

    async def ensure_image(self, image: str) -> None:
        """Pull `image` unless the engine has it. Raises RuntimeOperationError if it can
        be neither found nor pulled."""
        ...

    async def connect_network(
        self, container_id: str, network: str, aliases: list[str], labels: Mapping[str, str]
    ) -> None:
        """Join a running container to `network` (made with `labels` when missing), where
        other containers reach it by `aliases`. Already joined is not an error."""
        ...

    async def disconnect_network(self, container_id: str, network: str) -> None:
        """Leave `network`. A missing container or network, or not joined, is not an error."""
        ...

    async def exec_io(
        self,
        container_id: str,
        command: list[str],
        on_stdout: OnOutput,
        stdin: AsyncIterator[bytes] | None = None,
    ) -> tuple[int, bytes]:
        """Run a command in a running container with `stdin` fed to it (then closed), its
        stdout streamed to `on_stdout` byte-exact; returns the exit code and the end of its
        stderr (kept apart from stdout)."""
        ...

    async def close(self) -> None: ...
