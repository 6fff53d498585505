"""The HTTP reverse proxy: routes by Host header to the app's container, streaming both ways."""

from __future__ import annotations

import asyncio
import logging
import secrets

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from rivetr_git.proxy.routes import RouteTable, Upstream, normalize_host

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard ones proxies also drop.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
        "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    )
)
# Forwarding headers a client could forge; dropped and set by the proxy itself.
FORWARDING = frozenset(
    ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded")
)
_NO_BODY_STATUS = frozenset((204, 304))
_CHUNK = 64 * 1024


def _end_to_end(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    """Copy headers, leaving out hop-by-hop ones and any header named in Connection."""
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
        if token.strip()
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low in HOP_BY_HOP or low in drop or low in named:
            continue
        out.add(name, value)
    return out


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


def _page(status: int, title: str, detail: str) -> web.Response:
    body = f"<!doctype html><title>{status} {title}</title><h1>{title}</h1><p>{detail}</p>\n"
    return web.Response(status=status, text=body, content_type="text/html")


class ProxyServer:
    """aiohttp server that forwards each request to the upstream its Host header names."""

    def __init__(self, routes: RouteTable, host: str, port: int) -> None:
        self._routes = routes
        self._host = host
        self._port = port
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
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                auto_decompress=False,
                # Forward what the client sent, not aiohttp's own defaults.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=300),
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
        self._sweeper = asyncio.create_task(self._sweep())
        server = web.Server(self._handle, access_log=None, auto_decompress=False)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
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

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        # request.host would follow an absolute-form target; routing uses the Host header.
        host_header = request.headers.get("Host")
        upstream = self._routes.lookup(host_header)
        if upstream is None:
            host = normalize_host(host_header)
            if host in (self._routes.base_domain, "") and request.path == "/healthz":
                return web.Response(text=f"ok\nroutes: {len(self._routes)}\n")
            return _page(404, "Not Found", "No app is served at this address.")
        if upstream.stopped:
            return _page(503, "Service Unavailable", "The app is stopped by its owner.")
        if upstream.crashed:
            return _page(503, "Service Unavailable",
                         "The app keeps crashing and has been stopped; its owner has been told.")
        target = _origin_form(request)
        if target is None:
            return _page(400, "Bad Request", "This request target cannot be proxied.")
        self._routes.in_flight.enter(upstream)
        try:
            return await self._forward(request, upstream, target)
        except aiohttp.ClientConnectorError:
            return _page(502, "Bad Gateway", "The app is not answering right now.")
        except TimeoutError:
            return _page(504, "Gateway Timeout", "The app took too long to answer.")
        except aiohttp.ClientError:
            return _page(502, "Bad Gateway", "The app closed the connection unexpectedly.")
        finally:
            self._routes.in_flight.leave(upstream)

    def _request_headers(self, request: web.BaseRequest) -> CIMultiDict[str]:
        headers = _end_to_end(request.headers, FORWARDING)
        peer = request.remote or ""
        headers["X-Forwarded-For"] = peer
        headers["X-Real-IP"] = peer
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.headers.get("Host", "")
        if "X-Request-ID" not in headers:
            headers["X-Request-ID"] = secrets.token_hex(16)
        return headers

    async def _forward(
        self, request: web.BaseRequest, upstream: Upstream, target: str
    ) -> web.StreamResponse:
        # Host and port come only from the route; the path goes out byte for byte
        # (encoded=True: no re-quoting, no dot-segment folding).
        path, _, query = target.partition("?")
        url = URL.build(scheme="http", host=upstream.host, port=upstream.port, path=path,
                        query_string=query, encoded=True)
        data = request.content.iter_chunked(_CHUNK) if request.body_exists else None
        async with self._session_for(upstream).request(
            request.method,
            url,
            headers=self._request_headers(request),
            data=data,
            allow_redirects=False,
            compress=None,
        ) as upstream_response:
            response = web.StreamResponse(
                status=upstream_response.status, reason=upstream_response.reason
            )
            response.headers.extend(_end_to_end(upstream_response.headers, frozenset()))
            if request.method == "HEAD" or upstream_response.status in _NO_BODY_STATUS:
                await response.prepare(request)
                return response
            await response.prepare(request)
            try:
                async for chunk in upstream_response.content.iter_chunked(_CHUNK):
                    await response.write(chunk)
            except (TimeoutError, aiohttp.ClientError) as exc:
                # Headers are gone already: all we can do is cut the client off.
                log.info("upstream %s:%s broke mid-response: %s", upstream.host, upstream.port, exc)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
