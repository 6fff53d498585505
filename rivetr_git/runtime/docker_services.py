"""Docker (and Podman's compatible API): what backing services need beyond app containers:
images pulled on demand, joining other networks under an alias, and exec with separate
stdin, stdout and stderr (dumps and restores stream through it byte-exact)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import docker.errors

from rivetr_git.errors import RuntimeOperationError
from rivetr_git.runtime.base import ContainerSpec
from rivetr_git.runtime.docker_streams import OnOutput
from rivetr_git.runtime.docker_tty import raw_socket

_CHUNK = 1 << 16
_STDERR_KEPT = 4096  # the end of a command's stderr, for its error message


class DockerServices:
    """Calls of the Runtime protocol for services, mixed into DockerRuntime."""

    # Provided by DockerRuntime.
    _client: Any
    _call: Callable[..., Any]
    _network_of: Callable[[ContainerSpec], dict[str, Any]]

    async def ensure_image(self, image: str) -> None:
        def _ensure() -> None:
            try:
                self._client.api.inspect_image(image)
            except docker.errors.NotFound:
                try:
                    self._client.images.pull(image)
                except docker.errors.APIError as exc:
                    raise RuntimeOperationError(
                        f"image {image} is not on this engine and cannot be pulled "
                        f"({exc.explanation or exc}); check the version or the image setting"
                    ) from None

        await self._call("pull", _ensure)

    async def connect_network(
        self, container_id: str, network: str, aliases: list[str], labels: Mapping[str, str]
    ) -> None:
        def _connect() -> None:
            # The app's network may not exist yet (never deployed): made as its releases
            # would make it (same labels, a subnet from app_networks).
            self._network_of(
                ContainerSpec(name="", image="", port=0, labels=labels, network=network)
            )
            try:
                self._client.api.connect_container_to_network(
                    container_id, network, aliases=aliases
                )
            except docker.errors.APIError as exc:
                if "already exists" not in str(exc.explanation or exc):
                    raise

        await self._call("network connect", _connect)

    async def disconnect_network(self, container_id: str, network: str) -> None:
        def _disconnect() -> None:
            try:
                self._client.api.disconnect_container_from_network(container_id, network)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if "is not connected" not in str(exc.explanation or exc):
                    raise

        await self._call("network disconnect", _disconnect)

    async def exec_io(
        self,
        container_id: str,
        command: list[str],
        on_stdout: OnOutput,
        stdin: AsyncIterator[bytes] | None = None,
    ) -> tuple[int, bytes]:
        api = self._client.api

        def _start() -> tuple[str, Any]:
            created = api.exec_create(container_id, command, stdin=stdin is not None)
            return created["Id"], api.exec_start(created["Id"], socket=True)

        exec_id, hijacked = await self._call("exec", _start)
        sock = raw_socket(hijacked)
        sock.setblocking(False)
        feeder = asyncio.create_task(_feed(sock, stdin))
        try:
            stderr = await _demux(sock, on_stdout)
            await feeder  # its errors (the client's input) are the caller's
        finally:
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder
            sock.close()
        for _ in range(50):  # the stream ends a moment before the exec is marked done
            info = await self._call("exec", lambda: api.exec_inspect(exec_id))
            if not info.get("Running"):
                break
            await asyncio.sleep(0.1)
        code = info.get("ExitCode")
        return (int(code) if code is not None else 1), stderr


async def _feed(sock: socket.socket, stdin: AsyncIterator[bytes] | None) -> None:
    """Write `stdin` to the exec, then close its input (half-close: output still comes)."""
    if stdin is None:
        return
    loop = asyncio.get_running_loop()
    try:
        async for chunk in stdin:
            await loop.sock_sendall(sock, chunk)
    except (BrokenPipeError, ConnectionResetError):
        return  # the command stopped reading (it failed): its exit code says why
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


async def _demux(sock: socket.socket, on_stdout: OnOutput) -> bytes:
    """Split Docker's multiplexed stream (8-byte frame headers: stream, size) until it
    ends: stdout to `on_stdout`, stderr's end returned."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    stderr = bytearray()
    while True:
        try:
            data = await loop.sock_recv(sock, _CHUNK)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            return bytes(stderr)
        buf += data
        start = 0
        while len(buf) - start >= 8:
            size = int.from_bytes(buf[start + 4 : start + 8], "big")
            if len(buf) - start < 8 + size:
                break
            payload = bytes(buf[start + 8 : start + 8 + size])
            if buf[start] == 2:
                stderr += payload
                del stderr[:-_STDERR_KEPT]
            else:
                await on_stdout(payload)
            start += 8 + size
        del buf[:start]
