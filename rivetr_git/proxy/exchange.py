"""One proxied HTTP exchange: the request to the app, its answer streamed back to the client."""

from __future__ import annotations

import asyncio
import functools
import logging

from rivetr_git.proxy.headers import end_to_end_lines
from rivetr_git.proxy.http1 import BodyTooLarge, ClientConnection, Request
from rivetr_git.proxy.pages import reason
from rivetr_git.proxy.upstream import (
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CLOSE = b"Connection: close\r\n"


async def _send_body(
    client: ClientConnection, request: Request, conn: UpstreamConnection, timeout: float
) -> None:
    assert request.body is not None
    if request.expect_continue:
        client.write(_CONTINUE)
    async for chunk in request.body.chunks(timeout):
        await conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if request.chunked else chunk)
    if request.chunked:
        await conn.write(_LAST_CHUNK)


def _sent_all(sender: asyncio.Future[None] | None) -> bool:
    """The request body (if any) went out whole, so the connection may carry another."""
    return sender is None or (
        sender.done() and not sender.cancelled() and sender.exception() is None
    )


def _abort_on_failure(conn: UpstreamConnection, sender: asyncio.Future[None]) -> None:
    """A request body that failed (too large, client gone) must not look complete."""
    if sender.cancelled() or sender.exception() is not None:
        conn.abort()


class Outcome:
    """What the access log and the connection need to know afterwards."""

    __slots__ = ("keep_alive", "sent", "status")

    def __init__(self) -> None:
        self.status = 0
        self.sent = 0
        self.keep_alive = False


async def exchange(
    client: ClientConnection,
    request: Request,
    pool: UpstreamPool,
    head: bytes,
    read_timeout: float,
    out: Outcome,
) -> None:
    """Send the request, relay the answer. Raises UpstreamError (502), UpstreamTimeout
    (504) or BodyTooLarge (413) while nothing has been sent to the client yet."""
    for attempt in (1, 2):
        conn = await pool.acquire()
        keep = False
        sender: asyncio.Future[None] | None = None
        try:
            await conn.write(head)
            if request.body is not None:
                sender = asyncio.ensure_future(_send_body(client, request, conn, read_timeout))
                sender.add_done_callback(functools.partial(_abort_on_failure, conn))
            try:
                status, raw_headers = await conn.read_head(read_timeout)
            except UpstreamError:
                if (
                    sender is not None
                    and sender.done()
                    and not sender.cancelled()
                    and isinstance(sender.exception(), BodyTooLarge)
                ):
                    raise BodyTooLarge() from None
                # A kept-alive connection the app closed just as we reused it: once more.
                if attempt == 1 and conn.reused and not conn.received_any and sender is None:
                    continue
                raise
            await _relay(client, request, conn, status, raw_headers, read_timeout, out)
            # The app's connection is reusable on its own terms, whatever the client asked.
            keep = _sent_all(sender) and conn.complete
            out.keep_alive = out.keep_alive and _sent_all(sender)
            return
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            pool.release(conn, keep and request.method != b"HEAD")


async def _relay(
    client: ClientConnection,
    request: Request,
    conn: UpstreamConnection,
    status: int,
    raw_headers: list[tuple[bytes, bytes, bytes]],
    read_timeout: float,
    out: Outcome,
) -> None:
    out.status = status
    lines = end_to_end_lines(raw_headers)
    keep_alive = request.keep_alive
    no_body = request.method == b"HEAD" or status in (204, 304)
    framed = no_body or any(low == b"content-length" for low, _, _ in raw_headers)
    chunk = not framed and request.version == "1.1"
    if not framed and not chunk:
        keep_alive = False  # an HTTP/1.0 client learns the end by the close
    version = b"HTTP/1.1" if request.version == "1.1" else b"HTTP/1.0"
    head = b"".join(
        (
            b"%s %d %s\r\n" % (version, status, conn.reason or reason(status)),
            *lines,
            client.extra_head,
            _CHUNKED if chunk else b"",
            b"" if keep_alive else _CLOSE,
            b"\r\n",
        )
    )
    out.keep_alive = keep_alive
    if no_body:
        client.write(head)
        return
    if conn.complete:
        # The whole answer is here already (the common small one): one write.
        body = conn.take_body()
        out.sent = len(body)
        if chunk:
            client.write(
                b"%s%x\r\n%s\r\n0\r\n\r\n" % (head, len(body), body) if body else head + _LAST_CHUNK
            )
        else:
            client.write(head + body)
        return
    client.write(head)
    try:
        async for piece in conn.body(read_timeout):
            out.sent += len(piece)
            client.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunk else piece)
            await client.drain()
    except (UpstreamError, UpstreamTimeout) as exc:
        # The head is gone already: all we can do is cut the client off.
        log.info("app broke off its answer to %s: %s", request.target[:100], exc)
        out.keep_alive = False
        client.abort()
        return
    if chunk:
        client.write(_LAST_CHUNK)
