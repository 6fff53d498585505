"""The proxy's own HTTP client against hand-written upstream answers: framing and reuse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from rivetr_git.proxy.routes import Upstream
from tests.proxy_env import Env, raw_request


@dataclass
class RawApp:
    """A TCP upstream that answers every request with `answer(request_bytes)`."""

    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


@pytest.fixture
async def raw_app() -> AsyncIterator[Callable[[bytes, bool], RawApp]]:
    servers: list[asyncio.Server] = []

    async def make(answer: bytes, close: bool) -> RawApp:
        app = RawApp(0)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            app.connections += 1
            try:
                while head := await reader.readuntil(b"\r\n\r\n"):
                    app.requests.append(head)
                    writer.write(answer)
                    await writer.drain()
                    if close:
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        servers.append(server)
        app.port = int(server.sockets[0].getsockname()[1])
        return app

    yield make  # type: ignore[misc]
    for server in servers:
        server.close()
        await server.wait_closed()


async def _route(
    env: Env, make: Callable[..., object], answer: bytes, close: bool = False
) -> RawApp:
    app: RawApp = await make(answer, close)  # type: ignore[misc]
    await env.set_route(Upstream(app="raw", host="127.0.0.1", port=app.port, deployment_id=11))
    return app


def _get(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: raw.localhost\r\nConnection: close\r\n\r\n".encode()


async def test_no_headers_are_invented(env: Env, raw_app: Callable[..., object]) -> None:
    await _route(env, raw_app, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nhi")
    resp = await raw_request(env.proxy_port, _get())
    assert resp.status == 200 and resp.body == b"hi"
    assert resp.get("Content-Type") is None
    assert resp.get("X-A") == "1"


async def test_chunked_answer_is_relayed(env: Env, raw_app: Callable[..., object]) -> None:
    await _route(
        env,
        raw_app,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    resp = await raw_request(env.proxy_port, _get())
    assert resp.status == 200 and resp.body == b"hello world"


async def test_body_until_close_is_relayed(env: Env, raw_app: Callable[..., object]) -> None:
    await _route(
        env, raw_app, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", close=True
    )
    resp = await raw_request(env.proxy_port, _get())
    assert resp.status == 200 and resp.body == b"until the end"


async def test_bare_lf_header_lines_from_the_app_are_taken(
    env: Env, raw_app: Callable[..., object]
) -> None:
    """busybox httpd passes a CGI script's LF-only headers through."""
    await _route(
        env, raw_app, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\nContent-Length: 3\n\nCGI"
    )
    resp = await raw_request(env.proxy_port, _get())
    assert resp.status == 200 and resp.body == b"CGI"
    assert resp.get("Content-Type") == "text/plain"


async def test_header_lines_ending_in_a_bare_lf_are_accepted(
    env: Env, raw_app: Callable[..., object]
) -> None:
    # What busybox httpd sends for a CGI script: its status line, then the script's headers.
    await _route(
        env, raw_app, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\n\ncgi says hi\n", close=True
    )
    resp = await raw_request(env.proxy_port, _get())
    assert resp.status == 200 and resp.body == b"cgi says hi\n"
    assert resp.get("Content-Type") == "text/plain"


@pytest.mark.builtin_only("nginx relays a non-HTTP answer as HTTP/0.9")
async def test_garbage_from_the_app_is_502(env: Env, raw_app: Callable[..., object]) -> None:
    await _route(env, raw_app, b"SSH-2.0-OpenSSH_9.2\r\n\r\n", close=True)
    resp = await raw_request(env.proxy_port, _get())
    assert resp.status == 502
    assert b"SSH" not in resp.body


async def test_app_closing_without_an_answer_is_502(
    env: Env, raw_app: Callable[..., object]
) -> None:
    await _route(env, raw_app, b"", close=True)
    resp = await raw_request(env.proxy_port, _get())
    assert resp.status == 502


async def test_keep_alive_connections_to_the_app_are_reused(
    env: Env, raw_app: Callable[..., object]
) -> None:
    app = await _route(env, raw_app, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    for i in range(5):
        resp = await raw_request(env.proxy_port, _get(f"/{i}"))
        assert resp.status == 200
    assert app.connections == 1
    assert [r.split(b" ")[1] for r in app.requests] == [b"/0", b"/1", b"/2", b"/3", b"/4"]


async def test_a_connection_the_app_closed_is_not_reused_for_an_error(
    env: Env, raw_app: Callable[..., object]
) -> None:
    """The app closes after each answer without saying so: the next GET is retried once."""
    app = await _route(env, raw_app, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True)
    for _ in range(3):
        resp = await raw_request(env.proxy_port, _get())
        assert resp.status == 200
        await asyncio.sleep(0.05)
    assert app.connections >= 3
