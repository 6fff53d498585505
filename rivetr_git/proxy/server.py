"""The HTTP reverse proxy: routes by Host header to the app's container, streaming both ways."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import weakref

from rivetr_git.proxy.access_log import AccessLog
from rivetr_git.proxy.admission import Admission
from rivetr_git.proxy.balance import Balancer
from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.exchange import Outcome, exchange
from rivetr_git.proxy.headers import Forwarding
from rivetr_git.proxy.http1 import BodyTooLarge, ClientConnection, Request
from rivetr_git.proxy.pages import page, text
from rivetr_git.proxy.routes import RouteTable, Upstream, normalize_host
from rivetr_git.proxy.stats import ProxyStats, Snapshot
from rivetr_git.proxy.tls.contexts import TlsContexts
from rivetr_git.proxy.tls.http_rules import plain_answer, sts_line
from rivetr_git.proxy.tunnel import splice, switching_head
from rivetr_git.proxy.upstream import (
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
    UpstreamUnreachable,
)

log = logging.getLogger(__name__)

_IDEMPOTENT = (b"GET", b"HEAD", b"OPTIONS")
_TOO_LARGE = "The request body is larger than this server accepts."


def origin_form(target: bytes, method: bytes) -> bytes | None:
    """The request target as '/path?query', or None when it names no path on the app.

    An absolute-form target (GET http://other/x) keeps only its path: the route was
    chosen by the Host header. CONNECT, '*' and anything else are refused, so a
    client can never steer the proxy to another host or port.
    """
    if method == b"CONNECT":
        return None
    if target.startswith(b"/"):
        return target
    low = target[:8].lower()
    if low.startswith((b"http://", b"https://")):
        rest = target.split(b"//", 1)[1]
        slash = rest.find(b"/")
        query = rest.find(b"?")
        if slash >= 0 and (query < 0 or slash < query):
            return rest[slash:]
        return b"/" + rest[query:] if query >= 0 else b"/"
    return None


class ProxyServer:
    """Forwards each request to the upstream its Host header names."""

    def __init__(
        self,
        routes: RouteTable,
        host: str,
        port: int,
        config: ProxyConfig | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._routes = routes
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self.config = config = config or ProxyConfig()
        self._forwarding = Forwarding(config.trusted_proxies)
        self._access = (
            AccessLog(config.access_log, config.access_log_max_bytes, config.access_log_backups)
            if config.access_log
            else None
        )
        self._server: asyncio.Server | None = None
        self.stats = ProxyStats()  # per app, for /metrics
        self.admission: Admission | None = None  # made at start: it reads the fd limit
        self._connections: weakref.WeakSet[ClientConnection] = weakref.WeakSet()
        # One connection pool per upstream: once a replaced release has drained, its pool
        # is closed, so no kept-alive connection to it is ever reused (its port may even
        # come back later for another container).
        self._pools: dict[Upstream, UpstreamPool] = {}
        self._balancer = Balancer(routes.in_flight)
        self._sweeper: asyncio.Task[None] | None = None
        self.bound_port: int = port
        self._tls = TlsContexts(config.tls_dir) if config.tls_dir else None
        self._https: asyncio.Server | None = None
        self.https_port: int = config.https_port

    def _pool_for(self, upstream: Upstream) -> UpstreamPool:
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = UpstreamPool(
                upstream.host,
                upstream.port,
                self.config.upstream_connections,
                self.config.connect_timeout,
            )
        return pool

    async def _sweep(self) -> None:
        """Close the pools of upstreams that left the route table and have drained."""
        while True:
            await asyncio.sleep(1)
            live = {b for u in self._routes.snapshot().values() for b in u.backends()}
            for upstream in list(self._pools):
                if upstream not in live and not self._routes.in_flight.count(upstream):
                    self._pools.pop(upstream).close()

    def _connection(self, scheme: bytes = b"http") -> ClientConnection:
        conn = ClientConnection(self._handle, self.config, self.admission, scheme)
        self._connections.add(conn)
        return conn

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.admission = Admission(
            self.config.max_conns_per_ip, self.config.max_connections, self.config.trusted_proxies
        )
        self._sweeper = asyncio.create_task(self._sweep())
        self._server = await loop.create_server(
            self._connection,
            self._host,
            self._port,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
            backlog=1024,
        )
        sock = self._server.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.bound_port = int(sock.getsockname()[1])
        if self._tls is not None:
            await self._start_https(loop, self._tls)

    async def _start_https(self, loop: asyncio.AbstractEventLoop, tls: TlsContexts) -> None:
        tls.load()
        # A handshake that never finishes is cut like a slowloris head.
        self._https = await loop.create_server(
            lambda: self._connection(b"https"),
            self._host,
            self.https_port,
            ssl=tls.default,
            ssl_handshake_timeout=self.config.header_timeout or None,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
            backlog=1024,
        )
        sock = self._https.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.https_port = int(sock.getsockname()[1])

    def reload_tls(self) -> None:
        """Take the certificates the daemon published since the last load."""
        if self._tls is not None:
            self._tls.load()

    async def wait_synced(self, timeout: float) -> bool:
        """Route changes apply in this process at once (the same face as the others)."""
        return True

    def proxy_stats(self) -> Snapshot:
        """Requests, latencies and upstream errors per app since start (/metrics)."""
        return self.stats.snapshot()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._https is not None:
            self._https.close()
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):
                conn.close()
            await self._server.wait_closed()
        if self._https is not None:
            await self._https.wait_closed()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        if self._access is not None:
            self._access.close()

    async def _handle(self, client: ClientConnection, request: Request) -> bool:
        """Answer one request; True if the client connection may carry another."""
        started = time.monotonic()
        upstream = self._routes.lookup(request.host.decode("latin-1"))
        out = Outcome()
        try:
            await self._respond(client, request, upstream, out)
        finally:
            if upstream is not None:
                self.stats.record(upstream.app, out.status, time.monotonic() - started)
            if self._access is not None:
                self._access.record(
                    normalize_host(request.host.decode("latin-1")),
                    request.method.decode("latin-1"),
                    request.target.decode("utf-8", "replace"),
                    out.status,
                    out.sent,
                    started,
                    f"{upstream.host}:{upstream.port}" if upstream else "-",
                )
        return out.keep_alive

    def _page(
        self,
        client: ClientConnection,
        request: Request,
        out: Outcome,
        status: int,
        detail: str,
        close: bool = False,
    ) -> None:
        out.status = status
        out.keep_alive = not close
        client.write(page(status, detail, close=close, head_only=request.method == b"HEAD"))

    def _https_rules(self, client: ClientConnection, request: Request, out: Outcome) -> bool:
        """Challenges and redirects on plain HTTP, HSTS over HTTPS; True if answered."""
        assert self._tls is not None
        if client.scheme == b"https":
            # A name without a certificate is not served over HTTPS: the same 404 as an
            # unknown name (nginx, choosing its server by name, does the same).
            if not self._tls.covered(request.host):
                self._page(client, request, out, 404, "No app is served at this address.")
                return True
            client.extra_head = sts_line(self._tls, request.host)
            return False
        answer = plain_answer(
            self._tls, request.host, request.target, request.method, self.https_port
        )
        if answer is None:
            return False
        out.status, out.keep_alive = int(answer[9:12]), True
        client.write(answer)
        return True

    async def _respond(
        self, client: ClientConnection, request: Request, upstream: Upstream | None, out: Outcome
    ) -> None:
        if self._tls is not None and self._https_rules(client, request, out):
            return
        if upstream is None:
            return self._own_page(client, request, out)
        if upstream.stopped:
            return self._page(client, request, out, 503, "The app is stopped by its owner.")
        if upstream.crashed:
            return self._page(
                client,
                request,
                out,
                503,
                "The app keeps crashing and has been stopped; its owner has been told.",
            )
        target = origin_form(request.target, request.method)
        if target is None:
            return self._page(client, request, out, 400, "This request target cannot be proxied.")
        limit = self.config.max_body_size
        length = request.header(b"content-length")
        if limit and length is not None and length.strip().isdigit() and int(length) > limit:
            return self._page(client, request, out, 413, _TOO_LARGE, close=True)
        lines = self._forwarding.lines(request.headers, client.peer, client.scheme, request.host)
        backends = self._balancer.order(upstream)
        last = len(backends) - 1
        for index, backend in enumerate(backends):
            if await self._try(client, request, backend, target, lines, out, index < last):
                return

    async def _try(
        self,
        client: ClientConnection,
        request: Request,
        backend: Upstream,
        target: bytes,
        lines: list[bytes],
        out: Outcome,
        may_retry: bool,
    ) -> bool:
        """One web container's go at the request; False: it failed before anything
        reached the client, and the next container may take it (`may_retry`)."""
        self._routes.in_flight.enter(backend)
        try:
            if request.upgrade:
                await self._tunnel(client, request, backend, target, lines, out)
                return True
            head = b"".join(
                (
                    b"%s %s HTTP/1.1\r\n" % (request.method, target),
                    *lines,
                    b"Transfer-Encoding: chunked\r\n" if request.chunked else b"",
                    b"\r\n",
                )
            )
            await exchange(
                client, request, self._pool_for(backend), head, self.config.read_timeout, out
            )
            self._balancer.answered(backend)
        except UpstreamError as exc:
            self._balancer.failed(backend)
            # Nothing reached the app, or a body-less read the app dropped unanswered
            # (a container killed mid-request): another container can take it.
            retry_safe = isinstance(exc, UpstreamUnreachable) or (
                request.body is None and request.method in _IDEMPOTENT
            )
            if may_retry and retry_safe and not out.status:  # the client has seen nothing
                return False
            self._page(client, request, out, 502, f"{str(exc).capitalize()}.")
        except BodyTooLarge:
            self._page(client, request, out, 413, _TOO_LARGE, close=True)
        except UpstreamTimeout:
            self._page(client, request, out, 504, "The app took too long to answer.")
        except TimeoutError:  # the client stopped sending its body
            self._page(client, request, out, 408, "The request body stopped arriving.", close=True)
        finally:
            self._routes.in_flight.leave(backend)
        return True

    async def _tunnel(
        self,
        client: ClientConnection,
        request: Request,
        upstream: Upstream,
        target: bytes,
        lines: list[bytes],
        out: Outcome,
    ) -> None:
        """An Upgrade (WebSocket): the app must answer 101, then bytes flow both ways."""
        upgrade = request.header(b"upgrade") or b"websocket"
        head = b"".join(
            (
                b"%s %s HTTP/1.1\r\n" % (request.method, target),
                *lines,
                b"Connection: Upgrade\r\nUpgrade: %s\r\n\r\n" % upgrade,
            )
        )
        app = await self._pool_for(upstream).connect()
        try:
            await app.write(head)
            status, _ = await app.read_head(self.config.read_timeout)
            if status != 101 or not app.upgraded:
                return self._page(
                    client, request, out, 502, "The app refused the upgrade.", close=True
                )
            out.status = 101
            client.write(switching_head(app))
            sent, _ = await splice(client, app, self.config.websocket_idle_timeout)
            out.sent = sent
        finally:
            app.close()

    def _own_page(self, client: ClientConnection, request: Request, out: Outcome) -> None:
        """The proxy's own name answers /healthz and a small status page; nothing else."""
        host = normalize_host(request.host.decode("latin-1"))
        if host in (self._routes.base_domain, ""):
            path = request.target.split(b"?", 1)[0]
            head_only = request.method == b"HEAD"
            if path in (b"/healthz", b"/"):
                out.status = 200
                out.keep_alive = True
                client.write(
                    text(
                        f"ok\nroutes: {len(self._routes)}\n"
                        if path == b"/healthz"
                        else f"rivetr-git proxy: {len(self._routes)} app(s) at "
                        f"*.{self._routes.base_domain}\n",
                        head_only,
                    )
                )
                return
        self._page(client, request, out, 404, "No app is served at this address.")
