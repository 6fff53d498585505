"""The app's pre- and post-deploy commands, run with `sh -c` inside the new container.

Each is a list run in order; the first that fails ends the list (the rest do not run).
`pre` runs after the container starts and before the health check: a failure aborts
the deploy. `post` runs after the switch: a failure is reported and recorded, and the
release stays live. Output is streamed into the deploy log line by line, and each
command's duration is shown.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from rivetr_git.models import App
from rivetr_git.pipeline import app_policy
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.pipeline.repo_config import RepoConfig
from rivetr_git.runtime.base import Runtime
from rivetr_git.settings import Settings

_KEEP = 5  # output lines quoted in the failure reason


class LineSplitter:
    """Bytes in, complete text lines out (the last partial line on `close`)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [ln.rstrip(b"\r").decode("utf-8", "replace") for ln in lines]

    def close(self) -> list[str]:
        rest, self._buffer = self._buffer, b""
        return [rest.decode("utf-8", "replace")] if rest else []


def for_app(
    runtime: Runtime, settings: Settings, app: App, repo: RepoConfig, out: DeployLog
) -> Callable[[str, str], Awaitable[str | None]]:
    """Runs the app's pre or post list (deploy:set, else rivetr.toml) in a container:
    `await run(container_id, "pre")` is None, or why the first failing command failed."""

    def run(container_id: str, which: str) -> Awaitable[str | None]:
        commands = app_policy.deploy_commands(app, repo, which)
        timeout = app_policy.command_timeout(settings, app)
        return run_all(runtime, container_id, which, commands, timeout, out)

    return run


async def run_all(
    runtime: Runtime,
    container_id: str,
    which: str,
    commands: Sequence[str],
    timeout: float,
    out: DeployLog,
) -> str | None:
    """Run `commands` in order until one fails; None if all succeeded, else why the first
    failing one failed (the rest are not run)."""
    for number, command in enumerate(commands, 1):
        label = f"{number}/{len(commands)}: " if len(commands) > 1 else ""
        failed = await run(runtime, container_id, which, command, timeout, out, label)
        if failed:
            skipped = len(commands) - number
            if skipped:
                out.info(f"not running the {skipped} {which}-deploy command(s) after it")
            return f"{label}{failed}" if label else failed
    return None


async def run(
    runtime: Runtime,
    container_id: str,
    which: str,
    command: str,
    timeout: float,
    out: DeployLog,
    label: str = "",
) -> str | None:
    """Run one deploy command; None if it succeeded, else why it failed (with its last
    output lines)."""
    out.header(f"Running {which}-deploy command {label or ': '}{command}".replace(" : ", ": "))
    began = time.monotonic()
    splitter = LineSplitter()
    tail: deque[str] = deque(maxlen=_KEEP)

    async def on_output(chunk: bytes) -> None:
        for line in splitter.feed(chunk):
            out.output(line, which)
            tail.append(line)

    code = await runtime.exec_stream(container_id, ["sh", "-c", command], on_output, timeout)
    for line in splitter.close():
        out.output(line, which)
        tail.append(line)
    took = f"{time.monotonic() - began:.2f}s"
    if code == 0:
        out.info(f"{which}-deploy command done in {took}")
        return None
    what = f"timed out after {timeout:g}s" if code is None else f"exited with code {code}"
    out.info(f"{which}-deploy command failed after {took}")
    last = " | ".join(line.strip() for line in tail if line.strip())
    return f"{which}-deploy command {what}" + (f"; last output: {last}" if last else "")
