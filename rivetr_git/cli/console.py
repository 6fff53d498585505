"""Client mode's consoles: `rivetr-git run CMD` / `enter` on your terminal, as `ssh -t` does.

When stdin and stdout are both a terminal, the session asks the server for a pty of the
terminal's type and size, puts the local terminal in raw mode (so Ctrl-C travels as a byte
to the command instead of stopping this program), passes window changes on (SIGWINCH),
and puts the terminal back however the session ends.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from types import FrameType
from typing import Protocol

CONSOLE_VERBS = ("run", "enter")
_CHUNK = 65536


class Channel(Protocol):
    """What is used of a paramiko Channel (paramiko stays imported in cli/client.py only)."""

    def get_pty(self, term: str, width: int, height: int) -> None: ...
    def exec_command(self, command: str) -> None: ...
    def resize_pty(self, width: int, height: int) -> None: ...
    def fileno(self) -> int: ...
    def recv_ready(self) -> bool: ...
    def recv(self, nbytes: int) -> bytes: ...
    def recv_stderr_ready(self) -> bool: ...
    def recv_stderr(self, nbytes: int) -> bytes: ...
    def sendall(self, s: bytes) -> None: ...
    def exit_status_ready(self) -> bool: ...
    def recv_exit_status(self) -> int: ...


def wants_terminal(command: str) -> bool:
    """Whether `command` is a console verb run from a terminal."""
    try:
        verb = shlex.split(command)[:1]
    except ValueError:
        return False
    return (
        bool(verb)
        and verb[0] in CONSOLE_VERBS
        and sys.stdin is not None
        and sys.stdin.isatty()
        and sys.stdout.isatty()
    )


def console(channel: Channel, command: str) -> int:
    """Run `command` on a pty joined to this terminal; its exit status (-1: none sent)."""
    out_fd, in_fd = sys.stdout.fileno(), sys.stdin.fileno()
    size = os.get_terminal_size(out_fd)
    channel.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns, height=size.lines)
    channel.exec_command(command)
    with _raw(in_fd), _on_resize(channel, out_fd):
        while True:
            readable, _, _ = select.select([channel.fileno(), in_fd], [], [], 0.2)
            while channel.recv_ready():
                os.write(out_fd, channel.recv(_CHUNK))
            while channel.recv_stderr_ready():
                os.write(sys.stderr.fileno(), channel.recv_stderr(_CHUNK))
            if in_fd in readable:
                data = os.read(in_fd, _CHUNK)
                if data:
                    channel.sendall(data)
            if channel.exit_status_ready() and not (
                channel.recv_ready() or channel.recv_stderr_ready()
            ):
                return channel.recv_exit_status()


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _on_resize(channel: Channel, fd: int) -> Iterator[None]:
    def resize(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(Exception):  # the session may be closing
            size = os.get_terminal_size(fd)
            channel.resize_pty(width=size.columns, height=size.lines)

    previous = signal.signal(signal.SIGWINCH, resize)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)
