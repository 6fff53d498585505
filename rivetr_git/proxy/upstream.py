"""Connections to an app: a small HTTP/1.1 client built for proxying, with keep-alive pools.

aiohttp's client costs more per request than the rest of the proxy together, and does work
a proxy must undo (cookie jars, redirects, decompression, header defaults). This one writes
the request head in one piece, parses the answer with httptools (llhttp, in C), streams
bodies both ways with back-pressure and keeps connections alive per upstream.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable

import httptools

from rivetr_git.errors import RivetrError
from rivetr_git.proxy.flow import FlowControl

_HIGH_WATER = 256 * 1024  # buffered response bytes before reading from the app pauses


class UpstreamError(RivetrError):
    """The app could not be reached or broke the exchange (502)."""


class UpstreamUnreachable(UpstreamError):
    """No connection to the app could be made: nothing of the request reached it."""


class UpstreamTimeout(RivetrError):
    """The app accepted the request but stayed silent too long (504)."""


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


def _response_parser(protocol: UpstreamConnection) -> httptools.HttpResponseParser:
    parser = httptools.HttpResponseParser(protocol)
    # Apps (busybox httpd CGI, for one) end header lines with a bare LF; nginx takes that
    # from upstreams too. Requests from clients stay strict.
    parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
    return parser


class UpstreamConnection(FlowControl):
    """One TCP connection to an app, carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = _response_parser(self)
        self._headers: list[tuple[bytes, bytes, bytes]] = []
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[bool] | None = None  # True: timed out
        self.head_done = False
        self.complete = False
        self.closed = False
        self.received_any = False
        self.error: Exception | None = None
        self.status = 0
        self.reused = False
        self._keep_alive = False
        self.reason = b""
        # After a 101 the connection is a tunnel: raw bytes go to `sink`.
        self.upgraded = False
        self.upgrade_tail = b""
        self.sink: Callable[[bytes], None] | None = None
        self.on_close: Callable[[], None] | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = True
            self.upgrade_tail = data[exc.args[0] :]
            if self.transport is not None:
                self.transport.pause_reading()  # until the tunnel is in place
        except httptools.HttpParserError:
            self.error = UpstreamError("the app sent an invalid HTTP response")
            self.abort()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_close is not None:
            self.on_close()
        if not self.complete and self.error is None:
            self.error = UpstreamError("the app closed the connection")
            if self.head_done and not self._parser_expects_more():
                # A body delimited by the connection's end is complete now.
                self.complete = True
                self.error = None
        self._wake()
        self._release_drain()

    # --- httptools callbacks ---

    def on_status(self, status: bytes) -> None:
        self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200 and self.status != 101:
            # Interim answers (103, a stray 100) are dropped; 101 is the final one.
            self._headers = []
            return
        self.head_done = True
        # llhttp only answers this before the message completes.
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True

    # --- used by the proxy ---

    def _parser_expects_more(self) -> bool:
        # Without Content-Length or chunking, a response ends when the connection does.
        names = {low for low, _, _ in self._headers}
        return b"content-length" in names or b"transfer-encoding" in names

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def _wait(self, timeout: float) -> None:
        """Wait for the next bytes (or the end); UpstreamTimeout after `timeout` of silence."""
        waiter = self._waiter = self._loop.create_future()
        # A bare timer is cheaper than asyncio.timeout, and this runs for every answer.
        timer = self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if waiter.result():
            self.abort()
            raise UpstreamTimeout("the app did not answer in time")

    async def write(self, data: bytes) -> None:
        """Send bytes to the app, waiting while its socket buffer is full."""
        if self.closed or self.transport is None:
            raise UpstreamError("the app closed the connection")
        self.transport.write(data)
        await self._wait_for_room()

    async def read_head(self, timeout: float) -> tuple[int, list[tuple[bytes, bytes, bytes]]]:
        """Wait for the status and headers of the answer."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)
        return self.status, self._headers

    async def body(self, timeout: float) -> AsyncIterator[bytes]:
        """The answer's body as it arrives; each wait for more is bounded by `timeout`."""
        while True:
            while self._body:
                chunk = self._body.popleft()
                self._buffered -= len(chunk)
                yield chunk
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    @property
    def head_headers(self) -> list[tuple[bytes, bytes, bytes]]:
        return self._headers

    def take_body(self) -> bytes:
        """The whole body, once `complete` is set while the head was read."""
        body = b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        return body

    def reusable(self) -> bool:
        return self.complete and not self.closed and self.error is None and self._keep_alive

    def reset(self) -> None:
        """Ready for the next exchange on the same connection."""
        self._parser = _response_parser(self)
        self._headers = []
        self.head_done = self.complete = self.received_any = False
        self.status = 0
        self.reason = b""
        self.reused = True

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one app, at most `limit` busy at once (others queue)."""

    def __init__(self, host: str, port: int, limit: int, connect_timeout: float) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[UpstreamConnection] = []
        self._closed = False

    async def acquire(self) -> UpstreamConnection:
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    conn.reset()
                    return conn
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    async def connect(self) -> UpstreamConnection:
        """A connection of its own, outside the pool (for a tunnel)."""
        return await self._connect()

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(loop), self._host, self._port
                )
        except TimeoutError:
            raise UpstreamUnreachable("the app did not accept the connection in time") from None
        except OSError:
            raise UpstreamUnreachable("the app is not answering right now") from None
        return conn

    def release(self, conn: UpstreamConnection, keep: bool) -> None:
        self._slots.release()
        if keep and not self._closed and conn.reusable():
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
