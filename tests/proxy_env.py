"""A real proxy in front of a real aiohttp upstream on loopback, and raw-HTTP helpers."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.nginx import NginxProxy
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.proxy.server import ProxyServer
from rivetr_git.proxy.workers import ProxyWorkers

GZIP_PAYLOAD = b"compress me " * 2000
GZIPPED = gzip.compress(GZIP_PAYLOAD, mtime=0)


@dataclass
class Seen:
    """What the upstream received, for the assertions."""

    requests: list[dict[str, Any]] = field(default_factory=list)


SEEN = web.AppKey("seen", Seen)


async def _echo(request: web.Request) -> web.StreamResponse:
    """Echo the request as the upstream saw it: method, raw path, every header, the body."""
    seen = request.app[SEEN]
    body = await request.read()
    info: dict[str, Any] = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "peer": request.remote,
    }
    seen.requests.append(info)
    return web.json_response(info)


async def _hop_by_hop_response(request: web.Request) -> web.Response:
    response = web.Response(text="hop")
    response.headers["Connection"] = "X-Secret-Resp"
    response.headers["X-Secret-Resp"] = "upstream-only"
    response.headers["Keep-Alive"] = "timeout=5"
    response.headers["Proxy-Authenticate"] = "Basic realm=x"
    response.headers["Trailer"] = "X-Checksum"
    response.headers["Upgrade"] = "h2c"
    response.headers["TE"] = "trailers"
    response.headers["X-End-To-End"] = "kept"
    return response


async def _cookies(request: web.Request) -> web.Response:
    headers = CIMultiDict[str]()
    headers.add("Set-Cookie", "a=1; Path=/")
    headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    headers.add("Set-Cookie", "c=3, with comma; Path=/")
    return web.Response(text="cookies", headers=headers)


async def _gzip(request: web.Request) -> web.Response:
    return web.Response(
        body=GZIPPED,
        headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
    )


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"X-Empty": "yes"})


async def _head_target(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 1234, content_type="application/octet-stream")


async def _hang(request: web.Request) -> web.Response:
    """Answers only after the test gave up: for read timeouts and connection limits."""
    await asyncio.sleep(60)
    return web.Response(text="late")


async def _websocket_echo(request: web.Request) -> web.WebSocketResponse:
    """Echoes text and binary; 'close:CODE' closes with that code; answers pings itself."""
    ws = web.WebSocketResponse(protocols=("chat",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT and msg.data.startswith("close:"):
            await ws.close(code=int(msg.data[6:]), message=b"bye")
        elif msg.type is WSMsgType.TEXT and msg.data == "headers?":
            await ws.send_json([[k, v] for k, v in request.headers.items()])
        elif msg.type is WSMsgType.TEXT:
            await ws.send_str("echo:" + msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


def _upstream_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SEEN] = Seen()
    app.router.add_get("/hop", _hop_by_hop_response)
    app.router.add_get("/cookies", _cookies)
    app.router.add_get("/gzip", _gzip)
    app.router.add_get("/nothing", _no_content)
    app.router.add_get("/file", _head_target)  # also answers HEAD
    app.router.add_get("/hang", _hang)
    app.router.add_get("/ws", _websocket_echo)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


@dataclass
class Env:
    proxy_port: int
    upstream_port: int
    routes: RouteTable
    seen: Seen
    proxy: ProxyServer | NginxProxy | ProxyWorkers
    backend: str = "builtin"

    async def set_route(self, upstream: Upstream) -> None:
        """Route an app and wait until the proxy serves the new table."""
        self.routes.set(upstream)
        assert await self.proxy.wait_synced(10)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"


BACKENDS = ("builtin", "nginx")


@contextlib.asynccontextmanager
async def start_env(
    config: ProxyConfig | None = None, backend: str = "builtin", workers: int = 0
) -> AsyncIterator[Env]:
    """An upstream app 'web' on loopback, routed at web.localhost by a proxy of its own
    (rivetr's own, or nginx run from the same route table). `workers` > 0 runs rivetr's
    own proxy in that many worker processes instead of in this one."""
    app = _upstream_app()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream_port = int(runner.addresses[0][1])
    routes = RouteTable("localhost")
    routes.set(Upstream(app="web", host="127.0.0.1", port=upstream_port, deployment_id=1))
    proxy: ProxyServer | NginxProxy | ProxyWorkers
    if backend == "nginx":
        state = Path(tempfile.mkdtemp(prefix="rivetr-nginx-"))
        proxy = NginxProxy(routes, "127.0.0.1", 0, config or ProxyConfig(), 1, state, 5.0)
    elif workers:
        proxy = ProxyWorkers(routes, "127.0.0.1", 0, config or ProxyConfig(), workers)
    else:
        proxy = ProxyServer(routes, "127.0.0.1", 0, config)
    try:
        await proxy.start()
        assert proxy.bound_port != 0
        yield Env(proxy.bound_port, upstream_port, routes, app[SEEN], proxy, backend)
    finally:
        await proxy.close()
        await runner.cleanup()
        if backend == "nginx":
            shutil.rmtree(state, ignore_errors=True)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]


async def raw_request(port: int, data: bytes, timeout: float = 10) -> RawResponse:
    """Send bytes exactly as given; the request should say `Connection: close`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    response = RawResponse(int(status_line.split()[1]), headers, body)
    if (response.get("Transfer-Encoding") or "").lower() == "chunked":
        response.body = _dechunk(body)
    return response


def headers_of(info: dict[str, Any]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in info["headers"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
