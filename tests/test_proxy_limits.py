"""The proxy's timeouts and limits: slowloris, idle keep-alive, 502/504, 413, 431/400."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.routes import Upstream
from tests.proxy_env import free_port, headers_of, raw_request, start_env


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closes the connection within `seconds` (whatever it sends first)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def test_slowloris_is_cut_off_at_the_header_deadline(backend: str) -> None:
    async with start_env(backend=backend, config=ProxyConfig(header_timeout=0.5)) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.proxy_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: web.localhost\r\n")
        started = time.monotonic()

        async def trickle() -> None:
            for i in range(100):  # one header byte every 50 ms, never finishing the head
                writer.write(b"X-Slow-%d: x\r\n" % i if i % 10 == 0 else b"")
                await asyncio.sleep(0.05)

        trickler = asyncio.create_task(trickle())
        try:
            assert await _closed_within(reader, 4), "a trickling connection was kept open"
        finally:
            trickler.cancel()
            writer.close()
        assert time.monotonic() - started < 3
    assert env.seen.requests == []


async def test_a_silent_connection_is_closed_at_the_header_deadline(backend: str) -> None:
    async with start_env(backend=backend, config=ProxyConfig(header_timeout=0.3)) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.proxy_port)
        try:
            assert await _closed_within(reader, 3)
        finally:
            writer.close()


async def test_slow_but_complete_heads_and_keep_alive_still_work(backend: str) -> None:
    """The deadline is per request head: a kept-alive connection starts a fresh clock."""
    config = ProxyConfig(header_timeout=0.6, keepalive_timeout=5)
    async with start_env(backend=backend, config=config) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.proxy_port)
        try:
            for i in range(3):
                for part in (b"GET /k%d HTTP/1.1\r\n" % i, b"Host: web.localhost\r\n", b"\r\n"):
                    writer.write(part)
                    await asyncio.sleep(0.1)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                await reader.readexactly(length)
                await asyncio.sleep(0.4)  # idle between requests: keep-alive, not the deadline
        finally:
            writer.close()
    assert [r["raw_path"] for r in env.seen.requests] == ["/k0", "/k1", "/k2"]


async def test_idle_keep_alive_connections_are_closed(backend: str) -> None:
    async with start_env(backend=backend, config=ProxyConfig(keepalive_timeout=0.5)) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.proxy_port)
        try:
            writer.write(b"GET /once HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            assert await _closed_within(reader, 4)
        finally:
            writer.close()


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A loopback port whose accept queue is full: connects to it hang (no SYN-ACK)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.builtin_only("nginx answers 504 when connecting to the app times out")
async def test_upstream_connect_timeout_is_502(blackhole: int, backend: str) -> None:
    async with start_env(backend=backend, config=ProxyConfig(connect_timeout=0.5)) as env:
        await env.set_route(Upstream(app="hole", host="127.0.0.1", port=blackhole, deployment_id=9))
        started = time.monotonic()
        resp = await raw_request(
            env.proxy_port, b"GET / HTTP/1.1\r\nHost: hole.localhost\r\nConnection: close\r\n\r\n"
        )
        assert resp.status == 502
        assert time.monotonic() - started < 5


async def test_hanging_upstream_is_504(backend: str) -> None:
    async with start_env(backend=backend, config=ProxyConfig(read_timeout=0.5)) as env:
        resp = await raw_request(
            env.proxy_port,
            b"GET /hang HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
        )
        assert resp.status == 504
        assert b"took too long" in resp.body


async def test_connect_refused_is_502_and_the_page_reveals_nothing(backend: str) -> None:
    async with start_env(backend=backend) as env:
        await env.set_route(
            Upstream(app="down", host="127.0.0.1", port=free_port(), deployment_id=3)
        )
        resp = await raw_request(
            env.proxy_port, b"GET / HTTP/1.1\r\nHost: down.localhost\r\nConnection: close\r\n\r\n"
        )
    assert resp.status == 502
    body = resp.body.decode()
    for leak in ("127.0.0.1", "Connect", "Errno", "Traceback", "aiohttp", "Python"):
        assert leak not in body
    assert len(resp.body) < 300
    # The Server header names no version a scanner could match against advisories.
    server = resp.get("Server") or ""
    assert server in ("rivetr", "nginx") and not re.search(r"\d", server), server


# --- bodies -----------------------------------------------------------------------------------


async def test_content_length_over_max_body_size_is_413_without_reaching_the_app(
    backend: str,
) -> None:
    async with start_env(backend=backend, config=ProxyConfig(max_body_size=1000)) as env:
        resp = await raw_request(
            env.proxy_port,
            b"POST /up HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 1001\r\n"
            b"Connection: close\r\n\r\n" + b"x" * 1001,
        )
        assert resp.status == 413
        ok = await raw_request(
            env.proxy_port,
            b"POST /up HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 1000\r\n"
            b"Connection: close\r\n\r\n" + b"x" * 1000,
        )
        assert ok.status == 200
    assert [r["body_length"] for r in env.seen.requests] == [1000]


async def test_streamed_body_over_max_body_size_is_413_while_streaming(backend: str) -> None:
    limit = 256 * 1024
    async with start_env(backend=backend, config=ProxyConfig(max_body_size=limit)) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.proxy_port)
        try:
            writer.write(
                b"POST /up HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"y" * 64 * 1024)
            for _ in range(8):  # twice the limit, never finished: the 413 comes mid-stream
                writer.write(chunk)
                await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 413"), head
    # The app never saw a complete body it could mistake for the whole upload.
    assert all(r["body_length"] <= limit for r in env.seen.requests)
    assert env.seen.requests == []


async def test_expect_100_continue(backend: str) -> None:
    async with start_env(backend=backend, config=ProxyConfig(max_body_size=100)) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.proxy_port)
        try:
            writer.write(
                b"PUT /e HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()
        # Too large: refused at once, no 100 Continue, the body is never sent.
        reader, writer = await asyncio.open_connection("127.0.0.1", env.proxy_port)
        try:
            writer.write(
                b"PUT /e HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 500\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 413")
        finally:
            writer.close()
    assert len(env.seen.requests) == 1
    assert "Expect" not in headers_of(env.seen.requests[0])
    assert env.seen.requests[0]["body_length"] == 5


# --- malformed and oversized heads ------------------------------------------------------------


@pytest.mark.builtin_only("nginx answers 400 (or 414) to oversized heads")
async def test_oversized_header_is_431(backend: str) -> None:
    async with start_env(backend=backend, config=ProxyConfig(max_header_size=1024)) as env:
        resp = await raw_request(
            env.proxy_port,
            b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Big: "
            + b"a" * 2000
            + b"\r\nConnection: close\r\n\r\n",
        )
    assert resp.status == 431
    assert b"aaaa" not in resp.body  # nothing of the request is quoted back
    assert env.seen.requests == []


@pytest.mark.builtin_only("nginx has no limit on the number of headers")
async def test_too_many_headers_is_431(backend: str) -> None:
    async with start_env(backend=backend, config=ProxyConfig(max_headers=20)) as env:
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
        resp = await raw_request(
            env.proxy_port,
            b"GET / HTTP/1.1\r\nHost: web.localhost\r\n" + many + b"Connection: close\r\n\r\n",
        )
    assert resp.status == 431
    assert env.seen.requests == []


SMUGGLING = [
    b"POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 4\r\n"
    b"Content-Length: 5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked, identity\r\n"
    b"\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: web.localhost\r\nHost: other.localhost\r\n\r\n",
    pytest.param(
        b"GET / HTTP/1.1\nHost: web.localhost\n\n",
        marks=pytest.mark.builtin_only(
            "nginx takes bare-LF line endings (and reads this one unambiguously)"
        ),
    ),
    b"GET / HTTP/1.1\r\nHost: web.localhost\r\n Folded: x\r\n\r\n",
]


@pytest.mark.parametrize("raw", SMUGGLING, ids=range(len(SMUGGLING)))
async def test_smuggling_shapes_are_400(raw: bytes, backend: str) -> None:
    async with start_env(backend=backend) as env:
        resp = await raw_request(env.proxy_port, raw)
    # nginx says 501 to a Transfer-Encoding it does not implement: refused all the same.
    assert resp.status == 400 or (backend == "nginx" and resp.status == 501)
    assert len(resp.body) < 600 and b"localhost" not in resp.body
    assert env.seen.requests == []


# --- one slow app does not starve the others --------------------------------------------------


@pytest.fixture
async def other_upstream() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="other")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@pytest.mark.builtin_only("per-app connection limits in nginx need a shared zone")
async def test_a_slow_app_cannot_take_every_connection(
    other_upstream: int, client: aiohttp.ClientSession, backend: str
) -> None:
    config = ProxyConfig(upstream_connections=4)
    async with start_env(backend=backend, config=config) as env:
        await env.set_route(
            Upstream(app="other", host="127.0.0.1", port=other_upstream, deployment_id=5)
        )

        async def hang() -> None:
            async with (
                aiohttp.ClientSession() as s,
                s.get(env.base + "/hang", headers={"Host": "web.localhost"}) as resp,
            ):
                await resp.read()

        hanging = [asyncio.create_task(hang()) for _ in range(12)]
        try:
            await asyncio.sleep(0.3)
            assert env.routes.in_flight.count(env.routes.lookup("web.localhost")) == 12  # type: ignore[arg-type]
            # Only 4 reached the slow app; the other app still answers at once.
            assert len(env.seen.requests) <= 4
            async with asyncio.timeout(3):
                async with client.get(env.base + "/", headers={"Host": "other.localhost"}) as r:
                    assert await r.text() == "other"
        finally:
            for task in hanging:
                task.cancel()
            await asyncio.gather(*hanging, return_exceptions=True)
