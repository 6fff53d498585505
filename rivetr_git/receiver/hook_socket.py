"""The unix socket the git hooks talk to: ref updates in, pipeline output out.

Each push gets a random token; the post-receive hook presents it with the ref updates,
and receives the pipeline's output line by line while the deploy runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from rivetr_git.admin.service import Session
from rivetr_git.errors import ConfigError, RivetrError, UsageHelp
from rivetr_git.models import App
from rivetr_git.pipeline.deploy_commands import LineSplitter
from rivetr_git.pipeline.push import RefUpdate, Write

log = logging.getLogger(__name__)

PushCallback = Callable[[App, list[RefUpdate], str, Write], Awaitable[bool]]
# Local admin verbs from the CLI: the socket is 0600, so only this user can send them.
CommandCallback = Callable[[list[str], Session], Awaitable[int]]
EXIT_MARK = "rivetr-exit-status: "
_SHA = re.compile(r"[0-9a-f]{40}")
_MAX_REQUEST = 1 << 20


@dataclass
class PushContext:
    app: App
    key_name: str
    ok: bool | None = None  # None: the hook never reported (nothing was accepted)
    deploying: bool = False  # the pipeline runs: a silent build is not an idle session


class HookSocket:
    """Unix socket server for hooks, plus the registry of pushes in progress."""

    def __init__(self, path: Path, on_push: PushCallback, on_command: CommandCallback) -> None:
        if len(str(path)) > 100:
            raise ConfigError(
                f"data_dir is too deep for a unix socket ({path}); use a shorter data_dir path"
            )
        self.path = path
        self._on_push = on_push
        self._on_command = on_command
        self._pushes: dict[str, PushContext] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o077)  # only this user's hooks may talk to the daemon
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, path=str(self.path), limit=_MAX_REQUEST
            )
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def register(self, app: App, key_name: str) -> tuple[str, PushContext]:
        token = secrets.token_urlsafe(24)
        context = PushContext(app=app, key_name=key_name)
        self._pushes[token] = context
        return token, context

    def unregister(self, token: str) -> None:
        self._pushes.pop(token, None)

    async def _command(self, request: dict[str, object], write: Write) -> int:
        argv, stdin = request.get("command"), request.get("stdin", "")
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("command must be a list of strings")
        if not isinstance(stdin, str):
            raise ValueError("stdin must be a string")
        session = _SocketSession(write, stdin.encode())
        try:
            code = await self._on_command(argv, session)
        except UsageHelp as exc:
            await write(str(exc))
            return 0
        except RivetrError as exc:
            await session.flush()
            await write(f"rivetr-git: {exc}")
            return exc.exit_code
        await session.flush()
        return code

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def write(line: str) -> None:
            writer.write(line.encode() + b"\n")
            await writer.drain()

        try:
            request = json.loads(await reader.readline())
            if "command" in request:
                code = await self._command(request, write)
                await write(f"{EXIT_MARK}{code}")
                return
            context = self._pushes.get(str(request.get("token")))
            if context is None:
                await write(" !     unknown push; is this repository served by rivetr-git?")
                return
            updates = [_ref_update(u) for u in request.get("updates", [])]
            context.deploying = True
            try:
                context.ok = await self._on_push(context.app, updates, context.key_name, write)
            except Exception:
                context.ok = False
                log.exception("push to %s failed", context.app.name)
                with contextlib.suppress(OSError):
                    await write(" !     internal error in rivetr-git; see the server log")
            finally:
                context.deploying = False
        except (ValueError, TypeError, AttributeError) as exc:
            with contextlib.suppress(OSError):
                await write(f" !     bad hook request: {exc}")
        except OSError:
            pass  # the hook went away; the deploy itself carries on
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _SocketSession:
    """A local CLI command's output as lines on the socket; its stdin came with the request."""

    def __init__(self, write: Write, stdin: bytes) -> None:
        self._write = write
        self._stdin = stdin
        self._lines = LineSplitter()

    async def out(self, line: str) -> None:
        await self._write(line)

    async def out_bytes(self, data: bytes) -> None:
        for line in self._lines.feed(data):
            await self._write(line)

    async def flush(self) -> None:
        for line in self._lines.close():
            await self._write(line)

    async def read_input(self, limit: int) -> bytes:
        return self._stdin[:limit]


def _ref_update(item: object) -> RefUpdate:
    if not isinstance(item, list) or len(item) != 3 or not all(isinstance(x, str) for x in item):
        raise ValueError("each update must be [old, new, ref]")
    old, new, ref = item
    if not _SHA.fullmatch(old) or not _SHA.fullmatch(new) or not ref.startswith("refs/"):
        raise ValueError(f"malformed ref update {item!r}")
    return RefUpdate(old=old, new=new, ref=ref)
