"""One proxied HTTP exchange: the request to the app, its answer streamed back to the client."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from aiohttp import web
from multidict import CIMultiDict

from rivetr_git.proxy.headers import HOP_BY_HOP_BYTES
from rivetr_git.proxy.upstream import (
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

_NO_BODY_STATUS = frozenset((204, 304))
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class BodyTooLarge(Exception):
    """The request body passed max_body_size while it streamed (413)."""


def request_head(method: str, target: str, headers: CIMultiDict[str], chunked: bool) -> bytes:
    """The request line and headers for the app, in one buffer."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    if chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    # aiohttp decoded the client's bytes as UTF-8 with surrogateescape: undo exactly that.
    return "".join(lines).encode("utf-8", "surrogateescape")


async def _send_body(request: web.BaseRequest, conn: UpstreamConnection, chunked: bool,
                     limit: int) -> None:
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(_CONTINUE)
    seen = 0
    async for chunk in request.content.iter_any():
        seen += len(chunk)
        if limit and seen > limit:
            raise BodyTooLarge()
        await conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
    if chunked:
        await conn.write(_LAST_CHUNK)


class RelayResponse(web.StreamResponse):
    """The app's answer as it was: aiohttp adds no Content-Type or Server of its own, and
    the head waits for the first body bytes when those are already here (one write)."""

    def __init__(self, status: int, headers: CIMultiDict[str], send_now: bool) -> None:
        super().__init__(status=status, headers=headers)
        self._invented = [h for h in ("Content-Type", "Server") if h not in headers]
        self._send_headers_immediately = send_now

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        for name in self._invented:
            self._headers.popall(name, None)


def _response_headers(raw: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    named = {t.strip().lower() for n, v in raw if n.lower() == b"connection"
             for t in v.split(b",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in raw:
        low = name.lower()
        if low in HOP_BY_HOP_BYTES or low in named:
            continue
        out.add(name.decode("latin-1"), value.decode("latin-1"))
    return out


async def exchange(
    request: web.BaseRequest, pool: UpstreamPool, head: bytes, has_body: bool, chunked: bool,
    limit: int, read_timeout: float, sent: list[int],
) -> web.StreamResponse:
    """Send the request, relay the answer. Raises UpstreamError (502), UpstreamTimeout
    (504) or BodyTooLarge (413) while nothing has been sent to the client yet."""
    for attempt in (1, 2):
        conn = await pool.acquire()
        keep = False
        sender: asyncio.Future[None] | None = None
        try:
            await conn.write(head)
            if has_body:
                sender = asyncio.ensure_future(_send_body(request, conn, chunked, limit))
                sender.add_done_callback(functools.partial(_abort_on_failure, conn))
            try:
                status, raw_headers = await conn.read_head(read_timeout)
            except UpstreamError:
                if (sender is not None and sender.done() and not sender.cancelled()
                        and isinstance(sender.exception(), BodyTooLarge)):
                    raise BodyTooLarge() from None
                # A kept-alive connection the app closed just as we reused it: once more.
                if attempt == 1 and conn.reused and not conn.received_any and not has_body:
                    continue
                raise
            headers = _response_headers(raw_headers)
            if request.method == "HEAD" or status in _NO_BODY_STATUS:
                response = RelayResponse(status, headers, send_now=True)
                await response.prepare(request)
                keep = request.method != "HEAD" and conn.complete and _sent_all(sender)
                return response
            if conn.complete:
                # The whole answer is here already (the common small one): head and body
                # leave in one write.
                response = RelayResponse(status, headers, send_now=False)
                await response.prepare(request)
                body = conn.take_body()
                sent[0] += len(body)
                await response.write_eof(body)
                keep = _sent_all(sender)
                return response
            response = RelayResponse(status, headers, send_now=not conn.has_body_data)
            await response.prepare(request)
            try:
                async for chunk in conn.body(read_timeout):
                    sent[0] += len(chunk)
                    await response.write(chunk)
            except (UpstreamError, UpstreamTimeout) as exc:
                # Headers are gone already: all we can do is cut the client off.
                log.info("app %s broke mid-response: %s", request.host, exc)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            keep = _sent_all(sender)
            return response
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            pool.release(conn, keep)
    raise UpstreamError("the app closed the connection")  # not reached: the loop returns


def _sent_all(sender: asyncio.Future[None] | None) -> bool:
    """The request body (if any) went out whole, so the connection may carry another."""
    return sender is None or (sender.done() and not sender.cancelled()
                              and sender.exception() is None)


def _abort_on_failure(conn: UpstreamConnection, sender: asyncio.Future[None]) -> None:
    """A request body that failed (too large, client gone) must not look complete."""
    if sender.cancelled() or sender.exception() is not None:
        with contextlib.suppress(Exception):
            if conn.transport is not None:
                conn.transport.abort()
