"""aiohttp's connection handler with what a public proxy needs: a header deadline, plain errors.

aiohttp has no deadline for reading a request's headers, so a client that sends one byte every
few seconds (slowloris) would hold a connection forever; and its parser error pages quote the
offending bytes. `ProxyHandler` closes a connection whose request head is not complete within
`header_timeout` and answers parser errors with a small page that says only what was wrong.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def page(status: int, detail: str) -> web.Response:
    """A small HTML error page: the status and one sentence; never internals."""
    title = _TITLES.get(status, "Error")
    body = f"<!doctype html><title>{status} {title}</title><h1>{title}</h1><p>{detail}</p>\n"
    # Our own Server header: aiohttp's default would name itself and its version.
    return web.Response(status=status, text=body, content_type="text/html",
                        headers={"Server": "rivetr"})


def _parser_error(exc: BaseException | None) -> tuple[int, str]:
    """Map an aiohttp parser error to a status and a sentence that quotes nothing back."""
    if isinstance(exc, LineTooLong):
        return 431, "A request header (or the request line) is too long."
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message):
        return 431, "The request has too many headers."
    return 400, "The request is not valid HTTP."


class ProxyHandler(RequestHandler):
    """One client connection. Adds the header deadline; answers errors without internals."""

    __slots__ = ("_head_deadline", "_header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A connection that never sends a complete head is cut at the deadline too.
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The first bytes of a new request (not a body, not an upgraded stream) start the clock.
        if (self._head_deadline is None and self._current_request is None
                and not self._messages and not self._upgraded):
            self._arm()
        super().data_received(data)
        if self._messages or self._upgraded:
            self._disarm()

    def _arm(self) -> None:
        if self._header_timeout > 0:
            self._head_deadline = self._loop.call_later(self._header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _expired(self) -> None:
        self._head_deadline = None
        if self._current_request is None and not self._messages and self.transport is not None:
            log.debug("closing a connection that sent no complete request head in %gs",
                      self._header_timeout)
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; the connection is closed")
        if status == 500:
            log.error("proxy error on %s %s", request.method, request.path, exc_info=exc)
            response = page(500, "The proxy failed to handle this request.")
        else:
            log.debug("bad request from %s: %s", request.remote, exc)
            status, detail = _parser_error(exc)
            response = page(status, detail)
        response.force_close()
        return response


class ProxyServerFactory(web.Server):
    """web.Server that builds ProxyHandler connections."""

    def __init__(self, handler: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return ProxyHandler(self, loop=self._loop, header_timeout=self._header_timeout,
                            **self._kwargs)
