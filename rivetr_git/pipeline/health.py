"""Stage *health_check*: the new container must answer before it gets traffic.

A TCP connect alone proves nothing: Docker's port proxy accepts connections on the
published port even when nothing listens inside the container. So every attempt sends
a request and needs an answer.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from rivetr_git.errors import HealthCheckFailed
from rivetr_git.runtime.base import Runtime
from rivetr_git.terminal import neutralise


@dataclass(frozen=True)
class HealthPolicy:
    path: str  # '' means: any answer on the port will do
    interval: float  # the longest pause between attempts
    timeout: float  # one attempt
    retries: int
    start_period: float = 0.0  # failures in the first seconds after start do not count


async def probe(host: str, port: int, path: str, host_header: str, timeout: float) -> str | None:
    """One attempt. Returns None when healthy, else what went wrong."""
    request = (
        f"GET {path or '/'} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: rivetr-health\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                await writer.drain()
                first = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except OSError as exc:
        return f"connection failed ({exc.strerror or exc})"
    if not first:
        return "connection closed without an answer"
    if not path:
        return None
    parts = first.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return "answer is not HTTP"
    status = int(parts[1])
    if 200 <= status < 400:
        return None
    return f"GET {path} answered {status}"


# Probes come this often at most, so an app is seen within a few tens of milliseconds of
# answering (an `npm start` app takes about half a second); failures are counted by time.
_POLL = 0.05
_INSPECT_EVERY = 0.25  # seconds between engine lookups while probes keep failing


async def wait_healthy(
    runtime: Runtime,
    container_id: str,
    host_port: int,
    host_header: str,
    policy: HealthPolicy,
) -> tuple[int, float]:
    """Probe until healthy; return (attempts, seconds). Raises HealthCheckFailed.

    Probes run every `_POLL` seconds (faster at first), but a failure counts towards
    `policy.retries` at most once per `policy.interval`: the budget is time, about
    retries x interval, however often the app is asked.
    """
    started = time.monotonic()
    last = "not checked"
    attempt = failures = 0
    counted = inspected = -math.inf  # when a failure last counted; when the engine was asked
    while failures < policy.retries:
        attempt += 1
        if time.monotonic() - inspected >= _INSPECT_EVERY:
            inspected = time.monotonic()
            await _still_running(runtime, container_id)
        last = await probe("127.0.0.1", host_port, policy.path, host_header, policy.timeout) or ""
        if not last:
            # It answered; it must also still be up (an app can answer, then crash).
            info = await runtime.inspect(container_id)
            if info is not None and info.running:
                return attempt, time.monotonic() - started
            last = "container exited right after answering"
        now = time.monotonic()
        if now - started >= policy.start_period and now - counted >= policy.interval:
            failures += 1
            counted = now
        if failures < policy.retries:  # fast first retries catch apps that bind at once
            await asyncio.sleep(min(policy.interval, _POLL, 0.01 * 2 ** (attempt - 1)))
    what = f"GET {policy.path}" if policy.path else "the app's port"
    raise HealthCheckFailed(
        f"{what} failed {policy.retries} times (last: {neutralise(last)}); check that the app "
        "listens on $PORT"
    )


async def _still_running(runtime: Runtime, container_id: str) -> None:
    """Raise HealthCheckFailed, with its last output, if the container has stopped."""
    info = await runtime.inspect(container_id)
    if info is None or not info.running:
        output = (await runtime.logs(container_id, tail=5)).strip() if info else ""
        detail = f"; last output: {neutralise(output.splitlines()[-1])}" if output else ""
        code = info.exit_code if info else "?"
        raise HealthCheckFailed(f"container exited (exit code {code}){detail}")
