"""An open-loop HTTP client for bench/proxy.py: a fixed request rate, latency per request.

Latency counts from when a request was due, not when a connection was free, so a stall
shows up in the percentiles (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time


async def _connection(
    port: int,
    request: bytes,
    due: asyncio.Queue[float | None],
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (scheduled := await due.get()) is not None:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
            latencies.append((time.perf_counter() - scheduled) * 1000)
    finally:
        writer.close()


async def open_loop(
    port: int, host: str, rate: int, seconds: float, connections: int = 16
) -> dict[str, float]:
    """Send `rate` req/s for `seconds`; p50/p99 latency in ms, answered and error counts."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    due: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    errors: list[int] = []
    workers = [
        asyncio.create_task(_connection(port, request, due, latencies, errors))
        for _ in range(connections)
    ]
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(scheduled)
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "done": len(latencies),
        "errors": len(errors),
    }
