"""The reverse proxy in-process, in front of a real aiohttp upstream on loopback."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.routes import Upstream
from rivetr_git.validate import networks as parse_networks
from tests.proxy_env import (
    GZIP_PAYLOAD,
    GZIPPED,
    Env,
    free_port,
    headers_of,
    raw_request,
    start_env,
)

ABSOLUTE_FORM = "nginx routes an absolute-form target by its host (RFC 9112), not by Host"

# --- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["web.localhost", "WEB.localhost:1234", "web.localhost."])
async def test_routes_by_host_header(env: Env, client: aiohttp.ClientSession, host: str) -> None:
    async with client.get(env.base + "/hello", headers={"Host": host}) as resp:
        assert resp.status == 200
        info = await resp.json()
    assert info["raw_path"] == "/hello"
    assert headers_of(info)["Host"] == host  # the original Host reaches the app


@pytest.mark.parametrize(
    "host",
    [
        "other.localhost",
        "localhost",
        "web.example.com",
        "web",
        pytest.param("", marks=pytest.mark.builtin_only("nginx answers an empty Host with 400")),
    ],
)
async def test_unknown_host_is_404(env: Env, host: str) -> None:
    resp = await raw_request(
        env.proxy_port, f"GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    assert resp.status == 404
    assert env.seen.requests == []


@pytest.mark.builtin_only(ABSOLUTE_FORM)
async def test_absolute_form_target_does_not_override_host_header(env: Env) -> None:
    await env.set_route(Upstream(app="other", host="127.0.0.1", port=free_port(), deployment_id=2))
    resp = await raw_request(
        env.proxy_port,
        b"GET http://other.localhost/abs?q=1 HTTP/1.1\r\nHost: web.localhost\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert resp.status == 200, resp.body  # routed to 'web' (other's port is closed: 502)
    assert len(env.seen.requests) == 1
    assert headers_of(env.seen.requests[0])["Host"] == "web.localhost"


@dataclass
class Decoy:
    """A plain TCP service on loopback that no route points at."""

    port: int
    received: list[bytes]


@pytest.fixture
async def decoy() -> AsyncIterator[Decoy]:
    received: list[bytes] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(4096))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nDECOY!")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield Decoy(int(server.sockets[0].getsockname()[1]), received)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("CONNECT", "x@127.0.0.1:{port}"),
        ("CONNECT", "x:@127.0.0.1:{port}"),
        ("CONNECT", "127.0.0.1:{port}"),
        ("GET", "http://127.0.0.1:{port}/"),
        ("GET", "http://x@127.0.0.1:{port}/"),
        ("OPTIONS", "*"),
    ],
)
async def test_request_target_cannot_choose_where_the_proxy_connects(
    env: Env, decoy: Decoy, method: str, target: str
) -> None:
    """Only the route table decides the upstream: no request target may smuggle in another."""
    line = f"{method} {target.format(port=decoy.port)} HTTP/1.1"
    resp = await raw_request(
        env.proxy_port,
        f"{line}\r\nHost: web.localhost\r\nConnection: close\r\n\r\n".encode(),
    )
    assert decoy.received == [], f"{line!r} made the proxy connect to an unrouted service"
    assert b"DECOY" not in resp.body
    assert resp.status != 500, f"{line!r}: {resp.body!r}"


@pytest.mark.builtin_only(ABSOLUTE_FORM)
async def test_absolute_form_target_with_unknown_host_header_is_404(env: Env) -> None:
    resp = await raw_request(
        env.proxy_port,
        b"GET http://web.localhost/ HTTP/1.1\r\nHost: nobody.localhost\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert resp.status == 404
    assert env.seen.requests == []


async def test_upstream_down_is_502(env: Env, client: aiohttp.ClientSession) -> None:
    await env.set_route(Upstream(app="down", host="127.0.0.1", port=free_port(), deployment_id=3))
    async with client.get(env.base + "/", headers={"Host": "down.localhost"}) as resp:
        assert resp.status == 502
        assert "Bad Gateway" in await resp.text()


async def test_healthz_on_base_domain(env: Env, client: aiohttp.ClientSession) -> None:
    async with client.get(env.base + "/healthz", headers={"Host": "localhost"}) as resp:
        assert resp.status == 200
        assert (await resp.text()).startswith("ok")
    assert env.seen.requests == []


# --- headers ----------------------------------------------------------------------------------

REQUEST_HOP_BY_HOP = (
    "Keep-Alive",
    "TE",
    "Trailer",
    "Upgrade",
    "Proxy-Authorization",
    "Proxy-Connection",
    "X-Secret",
)


@pytest.mark.builtin_only("nginx passes on headers named in Connection")
async def test_hop_by_hop_request_headers_are_not_forwarded(env: Env) -> None:
    resp = await raw_request(
        env.proxy_port,
        b"GET /hop-req HTTP/1.1\r\n"
        b"Host: web.localhost\r\n"
        b"Connection: close, X-Secret\r\n"
        b"X-Secret: only-for-the-proxy\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: h2c\r\n"
        b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"X-End-To-End: kept\r\n"
        b"\r\n",
    )
    assert resp.status == 200, resp.body
    seen = headers_of(resp.json())
    for name in REQUEST_HOP_BY_HOP:
        assert name not in seen, f"{name} reached the upstream"
    assert "x-secret" not in (seen.get("Connection") or "").lower()
    assert "close" not in (seen.get("Connection") or "").lower()
    assert seen["X-End-To-End"] == "kept"


@pytest.mark.builtin_only("nginx passes on headers named in Connection, and Trailer")
async def test_hop_by_hop_response_headers_are_not_returned(
    env: Env, client: aiohttp.ClientSession
) -> None:
    async with client.get(env.base + "/hop", headers={"Host": "web.localhost"}) as resp:
        assert resp.status == 200
        assert await resp.text() == "hop"
        headers = resp.headers
    for name in ("X-Secret-Resp", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade", "TE"):
        assert name not in headers, f"{name} came back from the upstream"
    assert "x-secret-resp" not in headers.get("Connection", "").lower()
    assert headers["X-End-To-End"] == "kept"


async def test_forwarding_headers_are_set_by_the_proxy(env: Env) -> None:
    resp = await raw_request(
        env.proxy_port,
        b"GET /fwd HTTP/1.1\r\n"
        b"Host: WEB.localhost:8080\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\n"
        b"X-Real-IP: 6.6.6.6\r\n"
        b"X-Forwarded-Host: evil.example\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"Forwarded: for=6.6.6.6\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert resp.status == 200, resp.body
    seen = headers_of(resp.json())
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.getall("X-Real-IP") == ["127.0.0.1"]
    assert seen.getall("X-Forwarded-Host") == ["WEB.localhost:8080"]
    assert seen.getall("X-Forwarded-Proto") == ["http"]
    assert "Forwarded" not in seen
    assert "6.6.6.6" not in json.dumps(resp.json()["headers"])
    assert seen.getall("Host") == ["WEB.localhost:8080"]
    request_ids = seen.getall("X-Request-ID")
    assert len(request_ids) == 1 and len(request_ids[0]) >= 16


async def test_request_ids_are_unique_and_an_untrusted_client_cannot_set_one(
    env: Env, client: aiohttp.ClientSession
) -> None:
    ids = []
    for _ in range(2):
        async with client.get(env.base + "/id", headers={"Host": "web.localhost"}) as resp:
            ids.append(headers_of(await resp.json())["X-Request-ID"])
    assert ids[0] != ids[1]
    headers = {"Host": "web.localhost", "X-Request-ID": "trace-me-42"}
    async with client.get(env.base + "/id", headers=headers) as resp:
        request_ids = headers_of(await resp.json()).getall("X-Request-ID")
    assert len(request_ids) == 1 and request_ids[0] != "trace-me-42"


async def test_a_trusted_proxy_in_front_keeps_its_chain_and_request_id(
    client: aiohttp.ClientSession,
) -> None:
    config = ProxyConfig(trusted_proxies=parse_networks("10.0.0.0/8, 127.0.0.1"))
    async with start_env(config) as env:
        headers = {
            "Host": "web.localhost",
            "X-Request-ID": "trace-me-42",
            "X-Forwarded-For": "203.0.113.7, 10.1.2.3",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "web.example.com",
        }
        async with client.get(env.base + "/id", headers=headers) as resp:
            seen = headers_of(await resp.json())
    assert seen.getall("X-Request-ID") == ["trace-me-42"]
    assert seen.getall("X-Forwarded-For") == ["203.0.113.7, 10.1.2.3, 127.0.0.1"]
    assert seen.getall("X-Real-IP") == ["203.0.113.7"]  # the last address not ours
    assert seen.getall("X-Forwarded-Proto") == ["https"]
    assert seen.getall("X-Forwarded-Host") == ["web.example.com"]


async def test_a_client_outside_trusted_proxies_cannot_spoof(
    client: aiohttp.ClientSession,
) -> None:
    config = ProxyConfig(trusted_proxies=parse_networks("10.0.0.0/8"))
    async with start_env(config) as env:
        headers = {
            "Host": "web.localhost",
            "X-Forwarded-For": "203.0.113.7",
            "X-Real-IP": "203.0.113.7",
            "X-Request-ID": "forged",
        }
        async with client.get(env.base + "/id", headers=headers) as resp:
            seen = headers_of(await resp.json())
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.getall("X-Real-IP") == ["127.0.0.1"]
    assert seen["X-Request-ID"] != "forged"


def test_trusted_proxies_are_checked() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300' is not an IP address"):
        parse_networks("127.0.0.1, 10.0.0.300")


async def test_multiple_set_cookie_headers_survive(env: Env) -> None:
    resp = await raw_request(
        env.proxy_port,
        b"GET /cookies HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
    )
    assert resp.status == 200
    assert resp.getall("Set-Cookie") == [
        "a=1; Path=/",
        "b=2; Path=/; HttpOnly",
        "c=3, with comma; Path=/",
    ]


# --- paths and bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/a/%2F/../b?x=%20",
        "/./x/../y",
        "//double//slash",
        "/%7Euser/%41?a=1&a=2&b=%2B+",
        "/caf%C3%A9?q=%E2%9C%93",
        "/path;params?x",
        pytest.param("/a%00b/%ZZ", marks=pytest.mark.builtin_only("nginx refuses %00 with 400")),
    ],
)
async def test_raw_path_is_forwarded_byte_for_byte(env: Env, target: str) -> None:
    resp = await raw_request(
        env.proxy_port,
        f"GET {target} HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n".encode(),
    )
    assert resp.status == 200, resp.body
    assert resp.json()["raw_path"] == target


async def test_gzip_body_passes_through_compressed(env: Env) -> None:
    resp = await raw_request(
        env.proxy_port,
        b"GET /gzip HTTP/1.1\r\nHost: web.localhost\r\nAccept-Encoding: gzip\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert resp.status == 200
    assert resp.get("Content-Encoding") == "gzip"
    assert resp.body == GZIPPED
    assert gzip.decompress(resp.body) == GZIP_PAYLOAD


async def test_gzip_request_body_is_not_decompressed(
    env: Env, client: aiohttp.ClientSession
) -> None:
    headers = {"Host": "web.localhost", "Content-Encoding": "gzip"}
    async with client.post(env.base + "/upload", data=GZIPPED, headers=headers) as resp:
        info = await resp.json()
    # The upstream (which does decompress) saw gzip; the proxy did not unpack it on the way.
    assert headers_of(info)["Content-Encoding"] == "gzip"
    assert info["body_sha256"] == hashlib.sha256(GZIP_PAYLOAD).hexdigest()


BIG = os.urandom(3 * 1024 * 1024 + 17)


async def test_request_body_with_content_length_arrives_intact(
    env: Env, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        env.base + "/upload", data=BIG, headers={"Host": "web.localhost"}
    ) as resp:
        assert resp.status == 200
        info = await resp.json()
    assert info["body_length"] == len(BIG)
    assert info["body_sha256"] == hashlib.sha256(BIG).hexdigest()


async def test_chunked_request_body_arrives_intact(env: Env, client: aiohttp.ClientSession) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(BIG), 100_003):
            yield BIG[i : i + 100_003]

    async with client.put(
        env.base + "/upload", data=chunks(), headers={"Host": "web.localhost"}
    ) as resp:
        assert resp.status == 200
        info = await resp.json()
    assert info["method"] == "PUT"
    assert info["body_length"] == len(BIG)
    assert info["body_sha256"] == hashlib.sha256(BIG).hexdigest()


async def test_raw_chunked_request_body_arrives_intact(env: Env) -> None:
    body = b"hello, " * 1000
    chunked = (
        b"".join(
            f"{len(body[i : i + 777]):x}\r\n".encode() + body[i : i + 777] + b"\r\n"
            for i in range(0, len(body), 777)
        )
        + b"0\r\n\r\n"
    )
    resp = await raw_request(
        env.proxy_port,
        b"POST /upload HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunked,
    )
    assert resp.status == 200, resp.body
    assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_head_request(env: Env, client: aiohttp.ClientSession) -> None:
    async with client.head(env.base + "/file", headers={"Host": "web.localhost"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1234"
        assert await resp.read() == b""
    # The connection is still usable afterwards (no stray body bytes).
    async with client.get(env.base + "/file", headers={"Host": "web.localhost"}) as resp:
        assert resp.status == 200
        assert len(await resp.read()) == 1234


async def test_204_no_content(env: Env, client: aiohttp.ClientSession) -> None:
    async with client.get(env.base + "/nothing", headers={"Host": "web.localhost"}) as resp:
        assert resp.status == 204
        assert resp.headers["X-Empty"] == "yes"
        assert await resp.read() == b""
    async with client.get(env.base + "/after", headers={"Host": "web.localhost"}) as resp:
        assert resp.status == 200


async def test_keep_alive_connection_serves_several_requests(
    env: Env, client: aiohttp.ClientSession
) -> None:
    for i in range(5):
        async with client.get(f"{env.base}/n{i}", headers={"Host": "web.localhost"}) as resp:
            assert (await resp.json())["raw_path"] == f"/n{i}"
