"""Consoles on Docker: a container's or an exec's pty joined to a client's terminal.

Docker hands over the pty as a hijacked HTTP connection (attach, or exec start with
`socket=True`); with a tty the bytes are raw, not multiplexed. The connection's socket is
switched to non-blocking and read and written by the event loop itself (no thread per
console); the blocking API calls around it (create, start, resize, wait) run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from rivetr_git.runtime.base import Terminal

_CHUNK = 65536
# DockerRuntime._call: a blocking docker-py call in a thread, its errors translated.
Call = Callable[[str, Callable[[], Any]], Awaitable[Any]]
_ATTACH = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}


async def run(
    api: Any,
    create: Callable[[], str],
    terminal: Terminal,
    call: Call,
    remove: Callable[[str], Awaitable[None]],
) -> int:
    """Create (`create()`, blocking, with tty and stdin), attach, start, join to `terminal`;
    the command's exit code. The container is removed in every case."""
    created: list[str] = []

    def _start() -> Any:
        created.append(create())
        # Attached before the start, so the command's first output is not missed.
        hijacked = api.attach_socket(created[0], params=dict(_ATTACH))
        api.start(created[0])
        return hijacked

    try:
        hijacked = await call("run", _start)
        await join(
            raw_socket(hijacked),
            terminal,
            lambda cols, rows: api.resize(created[0], height=rows, width=cols),
        )
        result = await call("wait", lambda: api.wait(created[0], timeout=60))
        return int(result.get("StatusCode", 1))
    finally:
        if created:
            await asyncio.shield(remove(created[0]))


async def exec_in(
    api: Any, container_id: str, command: list[str], terminal: Terminal, call: Call
) -> int:
    """`docker exec -it`: `command` on a pty in a running container; its exit code. If the
    caller is cancelled (the client went away), the command is killed."""

    def _start() -> tuple[str, Any]:
        env = {"TERM": terminal.term}
        exec_id = api.exec_create(container_id, command, stdin=True, tty=True, environment=env)
        return exec_id["Id"], api.exec_start(exec_id["Id"], tty=True, socket=True)

    exec_id, hijacked = await call("exec", _start)
    try:
        await join(
            raw_socket(hijacked),
            terminal,
            lambda cols, rows: api.exec_resize(exec_id, height=rows, width=cols),
        )
    finally:
        info = await asyncio.shield(_finished(api, exec_id, call))
        if info.get("Running") and info.get("Pid"):
            # Docker cannot kill an exec'd process; its host PID can be (the engine is local).
            with contextlib.suppress(OSError):
                os.kill(int(info["Pid"]), signal.SIGKILL)
    code = info.get("ExitCode")
    return int(code) if code is not None else 1


async def _finished(api: Any, exec_id: str, call: Call) -> dict[str, Any]:
    """The exec's state once it has ended (its pty closes a moment before), or after 2 s."""
    for _ in range(20):
        info: dict[str, Any] = await call("exec", lambda: api.exec_inspect(exec_id))
        if not info.get("Running"):
            break
        await asyncio.sleep(0.1)
    return info


def raw_socket(hijacked: Any) -> socket.socket:
    """The socket under what docker-py's attach_socket / exec_start(socket=True) return."""
    sock = getattr(hijacked, "_sock", hijacked)
    if not isinstance(sock, socket.socket):
        raise TypeError(f"cannot use {type(hijacked).__name__} as a console connection")
    return sock


async def join(sock: socket.socket, terminal: Terminal, resize: Callable[[int, int], None]) -> None:
    """Relay between the pty's connection and `terminal` until the command's side closes.

    `resize(columns, rows)` is a blocking call (run in a thread) that sets the pty's size;
    it is called once now and again at each change of the client's window.
    """
    loop = asyncio.get_running_loop()
    sock.setblocking(False)

    async def keys() -> None:
        while data := await terminal.read():
            await loop.sock_sendall(sock, data)

    async def sizes() -> None:
        while True:
            columns, rows = await terminal.resized()
            with contextlib.suppress(Exception):  # the command may have ended meanwhile
                await asyncio.to_thread(resize, columns, rows)

    helpers = [asyncio.create_task(keys()), asyncio.create_task(sizes())]
    try:
        with contextlib.suppress(Exception):  # a race with a command that ends at once
            await asyncio.to_thread(resize, *terminal.size())
        while chunk := await _recv(loop, sock):
            await terminal.write(chunk)
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        sock.close()


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    try:
        return await loop.sock_recv(sock, _CHUNK)
    except (ConnectionResetError, BrokenPipeError):
        return b""
