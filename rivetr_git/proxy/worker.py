"""A proxy worker process: `python -m rivetr_git.proxy.worker`, driven by JSON lines on stdin.

The daemon (proxy/workers.py) sends the start-up line {"host", "port", "base_domain",
"config"}, then {"routes": [...]} whenever the table changes and {"drain": N, "upstream":
{...}, "timeout": T} when a replaced release must finish its requests. The worker answers
{"ready": PORT} once listening, {"applied": TABLE_NO} after each table and
{"drained": N, "ok": BOOL}; {"tls": TABLE_NO} (new certificates in the TLS state dir) is
answered like a table. EOF on stdin (the daemon
closed it, or died) stops the worker. It runs on uvloop when that is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from rivetr_git.proxy.config import config_from_json
from rivetr_git.proxy.fdlimit import raise_nofile_limit
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.proxy.server import ProxyServer

STATS_EVERY = 1.0  # seconds between a worker's stats reports (how stale /metrics may be)


def _say(message: dict[str, Any]) -> None:
    os.write(1, json.dumps(message).encode() + b"\n")


async def _drain(routes: RouteTable, message: dict[str, Any]) -> None:
    ok = await routes.in_flight.wait_idle(Upstream(**message["upstream"]), message["timeout"])
    _say({"drained": message["drain"], "ok": ok})


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    start = json.loads(await reader.readline())
    routes = RouteTable(start["base_domain"])
    proxy = ProxyServer(
        routes, start["host"], start["port"], config_from_json(start["config"]), reuse_port=True
    )
    await proxy.start()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    drains: set[asyncio.Task[None]] = set()

    async def read_commands() -> None:
        while line := await reader.readline():
            message = json.loads(line)
            if "routes" in message:
                routes.install({host: Upstream(**u) for host, u in message["routes"]})
                _say({"applied": message["table"]})
            elif "tls" in message:  # the daemon published certificates
                proxy.reload_tls()
                _say({"applied": message["tls"]})
            elif "drain" in message:
                task = asyncio.create_task(_drain(routes, message))
                drains.add(task)
                task.add_done_callback(drains.discard)
        stop.set()

    async def report_stats() -> None:
        """Send the request counts to the daemon (for /metrics) when they moved."""
        sent = 0
        while True:
            await asyncio.sleep(STATS_EVERY)
            if proxy.stats.version != sent:
                sent = proxy.stats.version
                _say({"stats": proxy.stats.snapshot()})

    reporter = asyncio.create_task(report_stats())
    commands = asyncio.create_task(read_commands())
    _say({"ready": proxy.bound_port, "pid": os.getpid()})
    try:
        await stop.wait()
    finally:
        reporter.cancel()
        commands.cancel()
        for task in drains:
            task.cancel()
        await proxy.close()


def main() -> None:
    # Ctrl-C reaches the whole process group: the daemon decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile_limit()  # every client connection is a descriptor
    try:
        import uvloop
    except ImportError:  # optional: the default loop works, only slower
        asyncio.run(serve())
        return
    with contextlib.suppress(BrokenPipeError):
        uvloop.run(serve())


if __name__ == "__main__":
    main()
