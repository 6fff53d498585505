"""The client's terminal (`ssh -t`) for a console: keystrokes, output and window size.

asyncssh reports a window change as TerminalSizeChanged raised by the stdin read; it is
turned into an entry of the resize queue, and reading goes on.
"""

from __future__ import annotations

import asyncio
import re

import asyncssh

from rivetr_git.receiver.relay import CHUNK

_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class SshTerminal:
    """Implements pipeline.consoles.Terminal on an SSH session that asked for a pty."""

    def __init__(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self._process = process
        term = process.get_terminal_type() or ""
        # It becomes the command's TERM: only a plain terminal name is passed on.
        self.term = term if _TERM.fullmatch(term) else "xterm"
        self._sizes: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def size(self) -> tuple[int, int]:
        columns, rows, _, _ = self._process.get_terminal_size()
        return columns or 80, rows or 24

    async def read(self) -> bytes:
        while True:
            try:
                return await self._process.stdin.read(CHUNK)
            except asyncssh.TerminalSizeChanged as change:
                self._sizes.put_nowait((change.width or 80, change.height or 24))
            except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue  # a pty sends Ctrl-C as a byte; these are not passed on

    async def write(self, data: bytes) -> None:
        self._process.stdout.write(data)
        await self._process.stdout.drain()

    async def resized(self) -> tuple[int, int]:
        return await self._sizes.get()
