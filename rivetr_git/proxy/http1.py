"""The client side of the proxy: one HTTP/1.1 connection, parsed by httptools (llhttp, strict).

llhttp refuses the request-smuggling shapes (Content-Length with Transfer-Encoding, two
Content-Lengths, obfuscated Transfer-Encoding, bare LF, obs-fold); this module adds what a
public proxy needs on top: a shorter deadline for a connection's first byte, a deadline for
each request head (slowloris), an idle keep-alive timeout, a place granted by
proxy/admission.py (per-address cap, shedding), header count and size limits (431), one
Host header, a body stream with back-pressure and a size limit, and pipelined requests
answered in order.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httptools

from rivetr_git.proxy.admission import Admission
from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.flow import FlowControl
from rivetr_git.proxy.headers import Header
from rivetr_git.proxy.pages import page

_HIGH_WATER = 256 * 1024  # buffered request body bytes before reading from the client pauses
# Rendered once: a flood's refused connections should cost as little as possible.
_REFUSED = {
    429: page(429, "This address has too many connections open; close some and retry.", close=True),
    503: page(503, "The server is busy; retry shortly.", close=True),
}


class BodyTooLarge(Exception):
    """The request body passed max_body_size (413)."""


class _HeadRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _cause(exc: BaseException) -> _HeadRefused | None:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None or isinstance(seen, _HeadRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class RequestBody:
    """A request body as the client sends it; a slow reader pauses the client."""

    def __init__(self, conn: ClientConnection, limit: int) -> None:
        self._conn = conn
        self._limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.received = 0
        self.done = False
        self.too_large = False
        self.error: Exception | None = None

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._limit and self.received > self._limit:
            self.too_large = True
        else:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > _HIGH_WATER:
                self._conn.pause_reading(body=True)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, exc: Exception) -> None:
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        """The body's bytes; BodyTooLarge past the limit, TimeoutError if the client stalls."""
        while True:
            if self.too_large:
                raise BodyTooLarge()
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                yield chunk
            self._conn.resume_reading(body=True)
            if self.done:
                return
            if self.error is not None:
                raise self.error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            finally:
                self._waiter = None


class Request:
    """One parsed request head, and its body if it has one."""

    __slots__ = (
        "body",
        "chunked",
        "expect_continue",
        "headers",
        "host",
        "keep_alive",
        "method",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: str,
        headers: list[Header],
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.host = b""
        self.chunked = False
        self.expect_continue = False
        self.body: RequestBody | None = None

    def header(self, low_name: bytes) -> bytes | None:
        for low, _, value in self.headers:
            if low == low_name:
                return value
        return None


Handler = Callable[["ClientConnection", Request], Awaitable[bool]]


class ClientConnection(FlowControl):
    """One client connection: parses requests, hands each to `handler`, in order."""

    def __init__(
        self,
        handler: Handler,
        config: ProxyConfig,
        admission: Admission | None = None,
        scheme: bytes = b"http",
    ) -> None:
        super().__init__()
        self.scheme = scheme  # b"https" on the TLS listener
        self.extra_head = b""  # header lines the proxy adds to the current answer (HSTS)
        self._handler = handler
        self._config = config
        self._admission = admission
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.closed = False
        self._queue: collections.deque[Request] = collections.deque()
        self._serving: asyncio.Task[None] | None = None
        self._parsing: Request | None = None
        self._url: list[bytes] = []
        self._url_size = 0
        self._headers: list[Header] = []
        self._head_bytes = 0
        self._in_head = False
        self._deadline: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._first_byte: asyncio.TimerHandle | None = None
        self._quiet = True  # nothing sent since connecting, or since the last answer
        self._paused_for: set[str] = set()
        self._close_after = False
        # Set while the connection is a tunnel (after a 101): raw bytes go there.
        self.sink: Callable[[bytes], None] | None = None
        self.upgrade_tail = b""

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        if self._admission is not None:
            refused = self._admission.admit(self)
            if refused:
                self.write(_REFUSED[refused])
                self.close()
                return
        self._start_head()  # a connection that never sends a complete head is cut too
        if self._config.first_byte_timeout > 0:
            self._first_byte = self._loop.call_later(
                self._config.first_byte_timeout, self._first_byte_expired
            )

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
            return
        if self._quiet:
            self._spoke()
        if not self._in_head and self._parsing is None:
            self._start_head()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgrade_tail = data[exc.args[0] :]
            self.pause_reading(body=False)  # the tunnel takes over from here
        except (_HeadRefused, httptools.HttpParserError) as exc:
            # httptools may wrap what a callback raised: look underneath.
            refused = exc if isinstance(exc, _HeadRefused) else _cause(exc)
            self._parse_failed(refused)
            return
        if self._in_head and self._head_bytes > self._head_limit():
            self._refuse(431, "The request headers are too large.")
            return
        # Requests start only once llhttp accepted all of their head (it checks
        # Transfer-Encoding after the headers callback).
        if self._queue and self._serving is None:
            self._serving = self._loop.create_task(self._serve())

    def _parse_failed(self, refused: _HeadRefused | None) -> None:
        failed, self._parsing = self._parsing, None
        if failed is not None and failed in self._queue:
            self._queue.remove(failed)  # never started: it simply did not happen
        elif failed is not None and failed.body is not None:
            failed.body.fail(ConnectionError("invalid request body framing"))
        self._queue.clear()
        if self._serving is None:
            if refused is not None:
                self._refuse(refused.status, refused.detail)
            else:
                self._refuse(400, "The request is not valid HTTP.")
        else:
            self._close_after = True  # answer what is in progress, then hang up

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timers()
        if self._admission is not None:
            self._admission.release(self)
        if self._parsing is not None and self._parsing.body is not None:
            self._parsing.body.fail(ConnectionResetError("the client went away"))
        if self._serving is not None:
            self._serving.cancel()
        self._release_drain()

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._url = []
        self._url_size = 0
        self._headers = []

    def on_url(self, part: bytes) -> None:
        self._url_size += len(part)
        if self._url_size > self._config.max_header_size:
            raise _HeadRefused(414, "The request target is too long.")
        self._url.append(part)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= self._config.max_headers:
            raise _HeadRefused(431, "The request has too many headers.")
        if len(name) + len(value) > self._config.max_header_size:
            raise _HeadRefused(431, "A request header is too long.")
        self._headers.append((name.lower(), name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        parser = self._parser
        request = Request(
            parser.get_method(),
            b"".join(self._url),
            parser.get_http_version(),
            self._headers,
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        hosts = [v for low, _, v in self._headers if low == b"host"]
        if len(hosts) > 1 or (not hosts and request.version == "1.1"):
            raise _HeadRefused(400, "The request must carry exactly one Host header.")
        request.host = hosts[0] if hosts else b""
        length = request.header(b"content-length")
        request.chunked = request.header(b"transfer-encoding") is not None
        if request.chunked or (length is not None and length.strip() not in (b"0", b"")):
            request.body = RequestBody(self, self._config.max_body_size)
            request.expect_continue = (request.header(b"expect") or b"").lower() == b"100-continue"
        self._parsing = request
        self._queue.append(request)

    def on_body(self, data: bytes) -> None:
        if self._parsing is not None and self._parsing.body is not None:
            self._parsing.body.feed(data)

    def on_message_complete(self) -> None:
        request, self._parsing = self._parsing, None
        if request is not None and request.body is not None:
            request.body.finish()
        # Pipelined requests wait their turn in the socket, not in memory.
        self.pause_reading(body=False)

    # --- serving ---

    async def _serve(self) -> None:
        try:
            while self._queue and not self.closed:
                request = self._queue.popleft()
                keep = await self._handler(self, request)
                unread = request.body is not None and not request.body.done
                if (
                    not keep
                    or not request.keep_alive
                    or unread
                    or request.upgrade
                    or self._close_after
                ):
                    self.close()
                    return
        finally:
            self._serving = None
        if not self.closed:
            self.resume_reading(body=False)
            self._idle = self._loop.call_later(self._config.keepalive_timeout, self._idle_expired)
            self._quiet = True
            if self._admission is not None:
                self._admission.idle(self)

    def _spoke(self) -> None:
        self._quiet = False
        if self._first_byte is not None:
            self._first_byte.cancel()
            self._first_byte = None
        if self._admission is not None:
            self._admission.spoke(self)

    def _first_byte_expired(self) -> None:
        self._first_byte = None
        if self._quiet:
            self.close()

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._deadline is None and self._config.header_timeout > 0:
            self._deadline = self._loop.call_later(self._config.header_timeout, self._head_expired)

    def _head_limit(self) -> int:
        return self._config.max_header_size * (self._config.max_headers + 2)

    def _head_expired(self) -> None:
        self._deadline = None
        if self._in_head:
            self.close()

    def _idle_expired(self) -> None:
        self._idle = None
        if self._serving is None and not self._in_head:
            self.close()

    def _cancel_timers(self) -> None:
        for timer in (self._deadline, self._idle, self._first_byte):
            if timer is not None:
                timer.cancel()
        self._deadline = self._idle = self._first_byte = None

    def _refuse(self, status: int, detail: str) -> None:
        """Answer a head the proxy will not handle, then close."""
        self._in_head = False
        if self._serving is None:
            self.write(page(status, detail, close=True))
        self.close()

    # --- used by the handler ---

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if not self.closed:
            await self._wait_for_room()

    def pause_reading(self, body: bool) -> None:
        reason = "body" if body else "turn"
        if not self._paused_for and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused_for.add(reason)

    def resume_reading(self, body: bool) -> None:
        self._paused_for.discard("body" if body else "turn")
        if not self._paused_for and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        self._cancel_timers()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def extra(self, name: str) -> Any:
        return self.transport.get_extra_info(name) if self.transport is not None else None
