"""WebSockets through the proxy: echo both ways, ping/pong, close codes, idle timeout, 502."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType
from multidict import CIMultiDict

from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.routes import Upstream
from tests.proxy_env import Env, free_port, start_env


async def test_websocket_echo_text_and_binary(env: Env, client: aiohttp.ClientSession) -> None:
    async with client.ws_connect(
        env.base + "/ws", headers={"Host": "web.localhost"}, protocols=("chat",)
    ) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "echo:hello"
        await ws.send_bytes(b"\x00\x01\x02")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.BINARY and msg.data == b"\x02\x01\x00"
        big = "x" * 1_000_000
        await ws.send_str(big)
        assert (await ws.receive(timeout=10)).data == "echo:" + big


async def test_websocket_ping_reaches_the_app_and_pong_comes_back(
    env: Env, client: aiohttp.ClientSession
) -> None:
    async with client.ws_connect(
        env.base + "/ws", headers={"Host": "web.localhost"}, autoping=False
    ) as ws:
        await ws.ping(b"are-you-there")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.PONG and msg.data == b"are-you-there"


async def test_websocket_close_code_from_the_app_reaches_the_client(
    env: Env, client: aiohttp.ClientSession
) -> None:
    async with client.ws_connect(env.base + "/ws", headers={"Host": "web.localhost"}) as ws:
        await ws.send_str("close:4001")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 4001 and msg.extra == "bye"


async def test_websocket_upgrade_carries_forwarding_headers(
    env: Env, client: aiohttp.ClientSession
) -> None:
    headers = {"Host": "web.localhost", "X-Forwarded-For": "6.6.6.6", "X-App": "kept"}
    async with client.ws_connect(env.base + "/ws", headers=headers) as ws:
        await ws.send_str("headers?")
        seen = CIMultiDict((k, v) for k, v in (await ws.receive_json(timeout=5)))
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert seen["X-App"] == "kept"
    assert seen["Host"] == "web.localhost"
    assert seen["Upgrade"].lower() == "websocket"


async def test_websocket_idle_timeout_closes_both_sides(client: aiohttp.ClientSession) -> None:
    async with (
        start_env(ProxyConfig(websocket_idle_timeout=0.5)) as env,
        client.ws_connect(env.base + "/ws", headers={"Host": "web.localhost"}) as ws,
    ):
        await ws.send_str("once")
        assert (await ws.receive(timeout=5)).data == "echo:once"
        msg = await ws.receive(timeout=5)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 1001


@pytest.mark.builtin_only("nginx relays the app's non-101 answer as it is")
async def test_websocket_to_an_app_that_refuses_is_502(
    env: Env, client: aiohttp.ClientSession
) -> None:
    # /plain is an ordinary HTTP route: the app answers 200, not 101.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(env.base + "/plain", headers={"Host": "web.localhost"})
    assert refused.value.status == 502
    await env.set_route(Upstream(app="down", host="127.0.0.1", port=free_port(), deployment_id=7))
    with pytest.raises(aiohttp.WSServerHandshakeError) as down:
        await client.ws_connect(env.base + "/ws", headers={"Host": "down.localhost"})
    assert down.value.status == 502


@pytest.mark.builtin_only("nginx drains by its workers, not by counts in the route table")
async def test_open_websockets_count_as_in_flight(env: Env, client: aiohttp.ClientSession) -> None:
    upstream = env.routes.lookup("web.localhost")
    assert upstream is not None
    async with client.ws_connect(env.base + "/ws", headers={"Host": "web.localhost"}) as ws:
        await ws.send_str("x")
        await ws.receive(timeout=5)
        assert env.routes.in_flight.count(upstream) == 1
    await asyncio.wait_for(env.routes.in_flight.wait_idle(upstream, 5), 6)
    assert env.routes.in_flight.count(upstream) == 0
