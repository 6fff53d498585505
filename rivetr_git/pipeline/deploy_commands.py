"""The app's pre- and post-deploy commands, run with `sh -c` inside the new container.

`pre` runs after the container starts and before the health check: a failure aborts
the deploy. `post` runs after the switch: a failure is reported and recorded, and the
release stays live. Output is streamed into the deploy log line by line.
"""

from __future__ import annotations

from collections import deque

from rivetr_git.pipeline.log import DeployLog
from rivetr_git.runtime.base import Runtime

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


async def run(
    runtime: Runtime, container_id: str, which: str, command: str, timeout: float, out: DeployLog
) -> str | None:
    """Run one deploy command; None if it succeeded, else why it failed (with its last
    output lines)."""
    out.header(f"Running {which}-deploy command: {command}")
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
    if code == 0:
        out.info(f"{which}-deploy command done")
        return None
    what = f"timed out after {timeout:g}s" if code is None else f"exited with code {code}"
    last = " | ".join(line.strip() for line in tail if line.strip())
    return f"{which}-deploy command {what}" + (f"; last output: {last}" if last else "")
