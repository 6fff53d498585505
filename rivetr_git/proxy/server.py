"""The HTTP reverse proxy: routes by Host header to the app's container, streaming both ways."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from aiohttp import web
from yarl import URL

from rivetr_git.proxy.access_log import AccessLog
from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.forward import BodyTooLarge, exchange, request_head
from rivetr_git.proxy.headers import Forwarding
from rivetr_git.proxy.protocol import ProxyServerFactory, page
from rivetr_git.proxy.routes import RouteTable, Upstream, normalize_host
from rivetr_git.proxy.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from rivetr_git.proxy.websocket import is_websocket, relay_websocket

log = logging.getLogger(__name__)



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
        self._runner: web.ServerRunner | None = None
        # One connection pool per upstream: once a replaced release has drained, its pool
        # is closed, so no kept-alive connection to it is ever reused (its port may even
        # come back later for another container).
        self._pools: dict[Upstream, UpstreamPool] = {}
        self._ws_session: aiohttp.ClientSession | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.bound_port: int = port

    def _pool_for(self, upstream: Upstream) -> UpstreamPool:
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = UpstreamPool(
                upstream.host, upstream.port, self.config.upstream_connections,
                self.config.connect_timeout)
        return pool

    def _websocket_session(self) -> aiohttp.ClientSession:
        """aiohttp's client, for WebSocket upgrades only (HTTP goes through the pools)."""
        if self._ws_session is None:
            self._ws_session = aiohttp.ClientSession(
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout,
                                              sock_read=self.config.read_timeout))
        return self._ws_session

    async def _sweep(self) -> None:
        """Close the pools of upstreams that left the route table and have drained."""
        while True:
            await asyncio.sleep(1)
            live = set(self._routes.snapshot().values())
            for upstream in list(self._pools):
                if upstream not in live and not self._routes.in_flight.count(upstream):
                    self._pools.pop(upstream).close()

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
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        if self._ws_session is not None:
            await self._ws_session.close()
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
        if upstream.stopped:
            return page(503, "The app is stopped by its owner.")
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
            headers = self._forwarding.request_headers(
                request.headers, request.remote or "", request.scheme)
            if is_websocket(request):
                return await relay_websocket(
                    request, self._websocket_session(), self._url(upstream, target), headers,
                    self.config.websocket_idle_timeout)
            chunked = request.body_exists and request.content_length is None
            return await exchange(
                request, self._pool_for(upstream),
                request_head(request.method, target, headers, chunked),
                request.body_exists, chunked, limit, self.config.read_timeout, sent)
        except BodyTooLarge:
            response = page(413, "The request body is larger than this server accepts.")
            response.force_close()
            return response
        except aiohttp.WSServerHandshakeError:
            return page(502, "The app refused the WebSocket upgrade.")
        except UpstreamTimeout:
            return page(504, "The app took too long to answer.")
        except UpstreamError as exc:
            return page(502, f"{str(exc).capitalize()}.")
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
