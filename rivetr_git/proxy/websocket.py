"""WebSocket proxying: the upgrade goes to the app, then messages are relayed both ways."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

# Each side of the relay does its own handshake: the client's key, version and extensions
# belong to the client's connection only.
_HANDSHAKE = ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
              "Sec-WebSocket-Protocol", "Sec-WebSocket-Accept")
_MAX_MESSAGE = 64 * 1024 * 1024


def is_websocket(request: web.BaseRequest) -> bool:
    return (request.headers.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in request.headers.get("Connection", "").lower())


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(src: Socket, dst: Socket, touch: list[float]) -> None:
    """Copy messages from src to dst until either closes."""
    loop = asyncio.get_running_loop()
    while True:
        msg = await src.receive()
        touch[0] = loop.time()
        if msg.type is WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type is WSMsgType.PING:
            await dst.ping(msg.data)
        elif msg.type is WSMsgType.PONG:
            await dst.pong(msg.data)
        elif msg.type is WSMsgType.CLOSE:
            await dst.close(code=msg.data or 1000, message=(msg.extra or "").encode())
            return
        else:  # CLOSING, CLOSED, ERROR: the other side goes away too
            await dst.close(code=1011 if msg.type is WSMsgType.ERROR else 1000)
            return


async def _watch_idle(touch: list[float], idle_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        left = touch[0] + idle_timeout - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(left)


async def relay_websocket(
    request: web.BaseRequest, session: aiohttp.ClientSession, url: URL,
    headers: CIMultiDict[str], idle_timeout: float,
) -> web.StreamResponse:
    """Open the app's WebSocket, then accept the client's and relay until one side closes.

    Raises aiohttp.WSServerHandshakeError when the app refuses the upgrade (the caller
    answers 502) and aiohttp.ClientError when it cannot be reached.
    """
    for name in _HANDSHAKE:
        headers.popall(name, None)
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                 if p.strip()]
    async with session.ws_connect(
        url.with_scheme("ws"), headers=headers, protocols=protocols, autoclose=False,
        autoping=False, max_msg_size=_MAX_MESSAGE, compress=0,
    ) as upstream:
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (), autoclose=False,
            autoping=False, max_msg_size=_MAX_MESSAGE, compress=False)
        await client.prepare(request)
        touch = [asyncio.get_running_loop().time()]
        tasks = [asyncio.ensure_future(_pump(client, upstream, touch)),
                 asyncio.ensure_future(_pump(upstream, client, touch)),
                 asyncio.ensure_future(_watch_idle(touch, idle_timeout))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        idle = tasks[2] in done
        code = 1001 if idle else 1000  # 1001 "going away" on the idle timeout
        for side in (client, upstream):
            if not side.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(side.close(code=code), 5)
        return client
