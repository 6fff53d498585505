"""The HTTP reverse proxy: routes by Host header to the app's container, streaming both ways."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

from rivetr_git.proxy.access_log import AccessLog
from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.headers import NO_DROP, Forwarding, end_to_end
from rivetr_git.proxy.protocol import ProxyServerFactory, page
from rivetr_git.proxy.routes import RouteTable, Upstream, normalize_host
from rivetr_git.proxy.websocket import is_websocket, relay_websocket

log = logging.getLogger(__name__)

_NO_BODY_STATUS = frozenset((204, 304))
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _BodyTooLarge(Exception):
    """Raised inside the request body stream once it passes max_body_size."""


def _origin_form(request: web.BaseRequest) -> str | None:
    """The request target as '/path?query', or None when it names no path on the app.

    An absolute-form target (GET http://other/x) keeps only its path: the route was
    chosen by the Host header. CONNECT, '*' and anything else are refused, so a
    client can never steer the proxy to another host or port.
    """
    target = request.raw_path
    if request.method == "CONNECT":
        return None
    if target.startswith("/"):
        return target
    if target.lower().startswith(("http://", "https://")):
        parsed = URL(target, encoded=True)
        return parsed.raw_path_qs if parsed.raw_path.startswith("/") else "/"
    return None


class ProxyServer:
    """aiohttp server that forwards each request to the upstream its Host header names."""

    def __init__(
        self, routes: RouteTable, host: str, port: int, config: ProxyConfig | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._routes = routes
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self.config = config = config or ProxyConfig()
        self._forwarding = Forwarding(config.trusted_proxies)
        self._access = (AccessLog(config.access_log, config.access_log_max_bytes,
                                  config.access_log_backups) if config.access_log else None)
        # Built once, shared by every upstream pool.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout)
        self._runner: web.ServerRunner | None = None
        # One connection pool per upstream: once a replaced release has drained, its pool
        # is closed, so no kept-alive connection to it is ever reused (its port may even
        # come back later for another container).
        self._sessions: dict[Upstream, aiohttp.ClientSession] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.bound_port: int = port

    def _session_for(self, upstream: Upstream) -> aiohttp.ClientSession:
        session = self._sessions.get(upstream)
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.config.upstream_connections, keepalive_timeout=30),
                auto_decompress=False,
                # Forward what the client sent, not aiohttp's own defaults.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[upstream] = session
        return session

    async def _sweep(self) -> None:
        """Close the pools of upstreams that left the route table and have drained."""
        while True:
            await asyncio.sleep(1)
            live = set(self._routes.snapshot().values())
            for upstream in list(self._sessions):
                if upstream not in live and not self._routes.in_flight.count(upstream):
                    await self._sessions.pop(upstream).close()

    async def start(self) -> None:
        c = self.config
        self._sweeper = asyncio.create_task(self._sweep())
        server = ProxyServerFactory(
            self._handle, header_timeout=c.header_timeout, access_log=None,
            auto_decompress=False, keepalive_timeout=c.keepalive_timeout,
            max_line_size=c.max_header_size, max_field_size=c.max_header_size,
            max_headers=c.max_headers, handler_cancellation=True,
        )
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True,
                           reuse_port=self._reuse_port or None)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.bound_port = int(addresses[0][1])

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        if self._access is not None:
            self._access.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        # request.host would follow an absolute-form target; routing uses the Host header.
        host = request.headers.get("Host", "")
        upstream = self._routes.lookup(host)
        sent = [0]
        response = await self._respond(request, upstream, sent)
        if self._access is not None:
            self._access.record(
                normalize_host(host), request.method, request.raw_path, response.status,
                sent[0], started, f"{upstream.host}:{upstream.port}" if upstream else "-")
        return response

    async def _respond(
        self, request: web.BaseRequest, upstream: Upstream | None, sent: list[int]
    ) -> web.StreamResponse:
        if upstream is None:
            return self._own_page(request, sent)
        if upstream.crashed:
            return page(503, "The app keeps crashing and has been stopped; its owner has "
                        "been told.")
        target = _origin_form(request)
        if target is None:
            return page(400, "This request target cannot be proxied.")
        limit = self.config.max_body_size
        if limit and (request.content_length or 0) > limit:
            response = page(413, "The request body is larger than this server accepts.")
            response.force_close()
            return response
        self._routes.in_flight.enter(upstream)
        try:
            if is_websocket(request):
                return await relay_websocket(
                    request, self._session_for(upstream), self._url(upstream, target),
                    self._forwarding.request_headers(
                        request.headers, request.remote or "", request.scheme),
                    self.config.websocket_idle_timeout)
            return await self._forward(request, upstream, target, sent)
        except _BodyTooLarge:
            response = page(413, "The request body is larger than this server accepts.")
            response.force_close()
            return response
        except aiohttp.WSServerHandshakeError:
            return page(502, "The app refused the WebSocket upgrade.")
        except aiohttp.ClientConnectorError:
            return page(502, "The app is not answering right now.")
        except aiohttp.ConnectionTimeoutError:
            return page(502, "The app did not accept the connection in time.")
        except TimeoutError:
            return page(504, "The app took too long to answer.")
        except aiohttp.ClientError:
            return page(502, "The app closed the connection unexpectedly.")
        finally:
            self._routes.in_flight.leave(upstream)

    def _own_page(self, request: web.BaseRequest, sent: list[int]) -> web.Response:
        """The proxy's own name answers /healthz and a small status page; nothing else."""
        host = normalize_host(request.headers.get("Host"))
        if host in (self._routes.base_domain, ""):
            if request.path == "/healthz":
                return web.Response(text=f"ok\nroutes: {len(self._routes)}\n")
            if request.path == "/":
                return web.Response(text=f"rivetr-git proxy: {len(self._routes)} app(s) "
                                         f"at *.{self._routes.base_domain}\n")
        return page(404, "No app is served at this address.")

    @staticmethod
    def _url(upstream: Upstream, target: str) -> URL:
        # Host and port come only from the route; the path goes out byte for byte
        # (encoded=True: no re-quoting, no dot-segment folding).
        path, _, query = target.partition("?")
        return URL.build(scheme="http", host=upstream.host, port=upstream.port, path=path,
                         query_string=query, encoded=True)

    async def _body(self, request: web.BaseRequest) -> AsyncIterator[bytes]:
        """The request body as it arrives, cut off with _BodyTooLarge past the limit."""
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(_CONTINUE)
        limit = self.config.max_body_size
        seen = 0
        async for chunk in request.content.iter_any():
            seen += len(chunk)
            if limit and seen > limit:
                raise _BodyTooLarge()
            yield chunk

    async def _forward(
        self, request: web.BaseRequest, upstream: Upstream, target: str, sent: list[int]
    ) -> web.StreamResponse:
        too_large = False
        data = self._body(request) if request.body_exists else None
        try:
            upstream_response = await self._session_for(upstream).request(
                request.method, self._url(upstream, target),
                headers=self._forwarding.request_headers(
                    request.headers, request.remote or "", request.scheme),
                data=data, allow_redirects=False, compress=None,
            )
        except Exception as exc:
            # aiohttp wraps what the body stream raised; find ours underneath.
            too_large = _caused_by_body_limit(exc)
            if too_large:
                raise _BodyTooLarge() from exc
            raise
        async with upstream_response:
            response = web.StreamResponse(
                status=upstream_response.status, reason=upstream_response.reason)
            response.headers.extend(end_to_end(upstream_response.headers, NO_DROP))
            await response.prepare(request)
            if request.method == "HEAD" or upstream_response.status in _NO_BODY_STATUS:
                return response
            try:
                async for chunk in upstream_response.content.iter_any():
                    sent[0] += len(chunk)
                    await response.write(chunk)
            except (TimeoutError, aiohttp.ClientError) as exc:
                # Headers are gone already: all we can do is cut the client off.
                log.info("upstream %s:%s broke mid-response: %s", upstream.host, upstream.port,
                         exc)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response


def _caused_by_body_limit(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, _BodyTooLarge):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
