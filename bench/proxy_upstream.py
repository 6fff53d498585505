"""The fast upstream of bench/proxy.py: aiohttp's low-level server on uvloop, one process.

GET / answers 'hello world'; GET /big?mb=N streams N MiB; POST /sink reads and discards
the body and answers its length. Prints the port it listens on, then serves until killed.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web

_MIB = b"\0" * (1024 * 1024)


async def handle(request: web.BaseRequest) -> web.StreamResponse:
    if request.path == "/big":
        response = web.StreamResponse()
        mib = int(request.query.get("mb", "1"))
        response.content_length = mib * len(_MIB)
        await response.prepare(request)
        for _ in range(mib):
            await response.write(_MIB)
        return response
    if request.path == "/sink":
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.Response(text=str(size))
    return web.Response(text="hello world")


async def main(port: int) -> None:
    server = web.Server(handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
