"""WebSockets (and any accepted Upgrade): after the app's 101, bytes are spliced both ways.

The handshake goes to the app with the client's own key, protocols and extensions, so
frames pass untouched: text, binary, ping/pong and close codes are the app's and the
client's own. A tunnel with no bytes either way for `idle_timeout` is closed with a
WebSocket close frame (1001, going away) to both sides.
"""

from __future__ import annotations

import asyncio

from rivetr_git.proxy.headers import HOP_BY_HOP, header_lines
from rivetr_git.proxy.http1 import ClientConnection
from rivetr_git.proxy.upstream import UpstreamConnection

_GOING_AWAY_TO_CLIENT = b"\x88\x02\x03\xe9"  # FIN+close, unmasked, code 1001
_GOING_AWAY_TO_APP = b"\x88\x82\x00\x00\x00\x00\x03\xe9"  # the same, masked (zero mask)
_KEEP_ON_101 = HOP_BY_HOP - {b"connection", b"upgrade"}


def switching_head(conn: UpstreamConnection) -> bytes:
    """The app's 101 for the client, with the Connection and Upgrade it needs."""
    _, headers = conn.status, conn.head_headers
    return b"".join(
        (
            b"HTTP/1.1 101 %s\r\n" % (conn.reason or b"Switching Protocols"),
            *header_lines(headers, _KEEP_ON_101),
            b"\r\n",
        )
    )


async def splice(
    client: ClientConnection, app: UpstreamConnection, idle_timeout: float
) -> tuple[int, int]:
    """Relay until either side closes; returns bytes (to the client, to the app)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    counts = [0, 0]
    last = [loop.time()]
    client_transport, app_transport = client.transport, app.transport
    assert client_transport is not None and app_transport is not None

    def to_client(data: bytes) -> None:
        last[0] = loop.time()
        counts[0] += len(data)
        client_transport.write(data)

    def to_app(data: bytes) -> None:
        last[0] = loop.time()
        counts[1] += len(data)
        app_transport.write(data)

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    # Back-pressure: a side that cannot take more pauses reading from the other.
    def client_full(full: bool) -> None:
        (app_transport.pause_reading if full else app_transport.resume_reading)()

    def app_full(full: bool) -> None:
        (client_transport.pause_reading if full else client_transport.resume_reading)()

    client.sink, app.sink = to_app, to_client
    client.on_write_pause, app.on_write_pause = client_full, app_full
    app.on_close = finish
    if app.upgrade_tail:
        to_client(app.upgrade_tail)
    if client.upgrade_tail:
        to_app(client.upgrade_tail)
    app_transport.resume_reading()
    client.resume_reading(body=False)
    try:
        while not done.done():
            left = last[0] + idle_timeout - loop.time()
            if left <= 0:
                client_transport.write(_GOING_AWAY_TO_CLIENT)
                app_transport.write(_GOING_AWAY_TO_APP)
                break
            await asyncio.wait([done], timeout=left)
    finally:
        # Also reached when the client goes away: its connection cancels this handler.
        client.close()
        app.close()
    return counts[0], counts[1]
