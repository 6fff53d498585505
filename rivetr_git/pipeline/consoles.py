"""Consoles: `run` on the client's terminal (`ssh -t`), and `enter`, a command inside a
running container of the app (`docker exec`, with a pty when the session has one).

On a terminal the bytes pass as they are, both ways: a shell or a REPL needs its escape
sequences, and Ctrl-C reaches the command as the pty's interrupt character.
"""

from __future__ import annotations

import re

from rivetr_git.errors import NotFound
from rivetr_git.models import App
from rivetr_git.pipeline import scale
from rivetr_git.pipeline.processes import Processes
from rivetr_git.runtime.base import OnOutput, Runtime, Terminal
from rivetr_git.terminal import ByteNeutraliser

__all__ = ["Consoles", "Terminal", "split_process"]

DEFAULT_COMMAND = ["sh"]
_PROCESS = re.compile(r"[a-z][a-z0-9_-]*\.[0-9]+")
# `enter` without a terminal streams its output like a deploy command; this bounds it.
_NO_TTY_TIMEOUT = 24 * 3600.0


def split_process(words: list[str]) -> tuple[str | None, list[str]]:
    """`[TYPE.N] [CMD ...]` -> (the process, or None; the command, default a shell)."""
    if words and _PROCESS.fullmatch(words[0]):
        return words[0], words[1:] or list(DEFAULT_COMMAND)
    return None, words or list(DEFAULT_COMMAND)


class Consoles:
    def __init__(self, runtime: Runtime, processes: Processes) -> None:
        self._runtime = runtime
        self._processes = processes

    async def run(self, app: App, command: list[str], terminal: Terminal) -> int:
        """`run APP CMD` on a pty: a one-off container of the live release, as `run`."""
        spec = await self._processes.oneoff_spec(app, command)
        return await self._runtime.run_console(spec, command, terminal)

    async def enter(
        self,
        app: App,
        process: str | None,
        command: list[str],
        terminal: Terminal | None,
        on_output: OnOutput,
    ) -> int:
        """Run `command` in the app's running container `process` (default its web.1)."""
        container_id = await self._container(app, process)
        if terminal is not None:
            return await self._runtime.exec_console(container_id, command, terminal)
        stream = ByteNeutraliser()

        async def safe(data: bytes) -> None:
            if out := stream.feed(data):
                await on_output(out)

        code = await self._runtime.exec_stream(container_id, command, safe, _NO_TTY_TIMEOUT)
        if rest := stream.close():
            await on_output(rest)
        return 124 if code is None else code

    async def _container(self, app: App, process: str | None) -> str:
        wanted = process or "web.1"
        found = await self._processes.live_containers(app)
        match = [c for c in found if scale.process_of(c) == wanted]
        if not match:
            running = ", ".join(scale.process_of(c) for c in found) or "no processes"
            raise NotFound(
                f"{app.name} has no process {wanted}; it runs {running} (see ps {app.name})"
            )
        if not match[0].running:
            raise NotFound(
                f"{app.name}'s {wanted} is not running; ps:start {app.name} (or ps:restart) "
                f"starts it, or run {app.name} CMD uses a new container"
            )
        return match[0].id
