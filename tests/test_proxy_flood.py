"""One client opening thousands of connections must not take the proxy down for the rest.

The proxies here run in processes of their own (a proxy worker, or nginx) started with a
soft open-file limit of 1024, the common default of shells and service managers, and the
hard limit left as it is: the state the issue's flood met.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rivetr_git.proxy.admission import Admission
from rivetr_git.proxy.config import ProxyConfig, config_to_json
from rivetr_git.proxy.routes import Upstream
from rivetr_git.validate import networks as parse_networks
from tests.helpers import Server
from tests.proxy_env import Env, start_env

FLOOD = 3000  # idle connections from one address
LEGIT = 30  # requests from another address while the flood is held
FLOODER = "127.0.0.3"
CLIENT = "127.0.0.2"
_IP_BIND_ADDRESS_NO_PORT = 24  # pick the source port at connect: 3000 binds never run out


@contextlib.contextmanager
def _soft_nofile(soft: int) -> Iterator[None]:
    """This process's soft open-file limit set to `soft` (the hard one kept) for a while."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))


@contextlib.asynccontextmanager
async def _own_process_env(backend: str, config: ProxyConfig | None = None) -> AsyncIterator[Env]:
    """The proxy in its own process(es), born with a soft limit of 1024; this test process
    gets every descriptor the hard limit allows, for its thousands of client sockets."""
    async with contextlib.AsyncExitStack() as stack:
        with _soft_nofile(1024):
            env = await stack.enter_async_context(start_env(config, backend, workers=1))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard < FLOOD + 512:
            pytest.skip(f"the hard open-file limit ({hard}) is too low for {FLOOD} sockets")
        stack.enter_context(_soft_nofile(hard))
        yield env


def _flood(port: int, count: int, source: str = FLOODER) -> list[socket.socket]:
    """`count` connections from `source` that never send a byte (non-blocking connects:
    bounded, whatever the server does with them)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    return socks


async def _get(port: int, source: str, path: str = "/", timeout: float = 5.0) -> int | None:
    """One request on a connection of its own from `source`: its status, or None when the
    connection was closed, reset or timed out without an answer."""
    status, _ = await _exchange(port, source, path, timeout)
    return status


async def _exchange(
    port: int, source: str, path: str = "/", timeout: float = 5.0
) -> tuple[int | None, bytes]:
    """_get, and the whole answer."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: web.localhost\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                raw = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None, b""
    if not raw.startswith(b"HTTP/1.1 "):
        return None, raw
    return int(raw.split(b" ", 2)[1]), raw


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def test_an_idle_flood_from_one_address_does_not_starve_another(backend: str) -> None:
    async with _own_process_env(backend) as env:
        assert await _get(env.proxy_port, CLIENT) == 200
        flood = _flood(env.proxy_port, FLOOD)
        try:
            await asyncio.sleep(0.5)  # the proxy takes in (or turns away) the flood
            statuses = []
            for _ in range(LEGIT):
                statuses.append(await _get(env.proxy_port, CLIENT, "/legit", timeout=3))
                await asyncio.sleep(0.05)
        finally:
            for sock in flood:
                sock.close()
    assert statuses == [200] * LEGIT, f"{statuses.count(200)} of {LEGIT} requests succeeded"


async def test_an_address_over_its_cap_is_refused_while_others_are_served(backend: str) -> None:
    # The app answers /hang only after the read timeout (504), which ends those requests.
    async with start_env(ProxyConfig(max_conns_per_ip=4, read_timeout=2), backend) as env:
        held = []
        try:
            for _ in range(4):  # four requests in flight from one address (the app hangs)
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", env.proxy_port, local_addr=(FLOODER, 0)
                )
                writer.write(b"GET /hang HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
                held.append(writer)
            await asyncio.sleep(0.5)
            status, answer = await _exchange(env.proxy_port, FLOODER)
            assert status == 429
            body = answer.partition(b"\r\n\r\n")[2]
            assert b"too many connections" in body and b"nginx" not in body.lower()
            assert await _get(env.proxy_port, CLIENT) == 200
        finally:
            for writer in held:
                writer.close()
        await asyncio.sleep(2.5)
        assert await _get(env.proxy_port, FLOODER) == 200, "ended requests give the place back"


async def test_a_connection_that_sends_nothing_is_closed_at_the_first_byte_deadline(
    backend: str,
) -> None:
    config = ProxyConfig(first_byte_timeout=0.5, header_timeout=30)
    async with start_env(config, backend) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.proxy_port)
        try:
            assert await _closed_within(reader, 3), "a silent connection outlived 0.5 s"
        finally:
            writer.close()


@pytest.mark.builtin_only("nginx has one deadline from accept to the end of the head")
async def test_a_connection_mid_request_outlives_the_first_byte_deadline(backend: str) -> None:
    config = ProxyConfig(first_byte_timeout=0.3, header_timeout=30)
    async with start_env(config, backend) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.proxy_port)
        try:
            writer.write(b"GET / HTTP/1.1\r\n")
            assert not await _closed_within(reader, 1.5)
            writer.write(b"Host: web.localhost\r\nConnection: close\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        finally:
            writer.close()


@pytest.mark.builtin_only("nginx sheds idle connections when worker_connections run out")
async def test_at_the_high_water_mark_the_oldest_silent_connections_are_shed(backend: str) -> None:
    config = ProxyConfig(
        max_connections=20, max_conns_per_ip=0, first_byte_timeout=30, header_timeout=30
    )
    async with start_env(config, backend) as env:
        conns = []
        try:
            for i in range(20):
                conns.append(
                    await asyncio.open_connection(
                        "127.0.0.1", env.proxy_port, local_addr=(FLOODER, 0)
                    )
                )
                if i == 0:  # the oldest is mid-request: never shed
                    conns[0][1].write(b"GET / HTTP/1.1\r\n")
            await asyncio.sleep(0.3)
            assert await _get(env.proxy_port, CLIENT) == 200
            assert await _closed_within(conns[1][0], 2), "the oldest silent one was kept"
            assert not await _closed_within(conns[-1][0], 0.3), "the newest one was shed"
            assert not await _closed_within(conns[0][0], 0.3), "a mid-request one was shed"
        finally:
            for _, writer in conns:
                writer.close()


@contextlib.asynccontextmanager
async def _worker_with_nofile(
    upstream_port: int, config: ProxyConfig, nofile: int
) -> AsyncIterator[tuple[int, int]]:
    """A real proxy worker process whose hard open-file limit is `nofile`: (port, pid)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rivetr_git.proxy.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=limit,
    )
    assert process.stdin is not None and process.stdout is not None
    upstream = Upstream(app="web", host="127.0.0.1", port=upstream_port, deployment_id=1)
    for message in (
        {
            "host": "127.0.0.1",
            "port": 0,
            "base_domain": "localhost",
            "config": config_to_json(config),
        },
        {"routes": [["web.localhost", dataclasses.asdict(upstream)]], "table": 1},
    ):
        process.stdin.write(json.dumps(message).encode() + b"\n")
    try:
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        await asyncio.wait_for(process.stdout.readline(), 10)  # the table is applied
        yield ready["ready"], process.pid
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_a_worker_near_its_fd_limit_sheds_silent_connections_and_keeps_serving() -> None:
    """A worker with 256 descriptors in all, and 600 silent connections from one address
    (no cap): the oldest silent ones make room, requests from elsewhere are served."""
    config = ProxyConfig(max_conns_per_ip=0, first_byte_timeout=30, header_timeout=30)
    async with (
        start_env() as env,
        _worker_with_nofile(env.upstream_port, config, 256) as (port, pid),
    ):
        flood = _flood(port, 600)
        try:
            await asyncio.sleep(0.5)
            statuses = [await _get(port, CLIENT, timeout=3) for _ in range(10)]
            open_fds = len(os.listdir(f"/proc/{pid}/fd"))
        finally:
            for sock in flood:
                sock.close()
    assert statuses == [200] * 10
    assert open_fds < 256, f"the worker holds {open_fds} descriptors of 256"


@dataclasses.dataclass(eq=False)
class _FakeConn:
    """Pure-logic unit test stand-in for a client connection."""

    peer: str
    closed: bool = False

    def close(self) -> None:
        self.closed = True


def test_admission_unit_cap_exemption_and_shedding_order() -> None:
    admission = Admission(2, 4, parse_networks("10.0.0.0/8"))
    a1, a2, a3 = _FakeConn("1.1.1.1"), _FakeConn("1.1.1.1"), _FakeConn("1.1.1.1")
    assert admission.admit(a1) == 0 and admission.admit(a2) == 0
    assert admission.admit(a3) == 429, "a third from one address is over the cap of 2"
    lb = [_FakeConn("10.0.0.5") for _ in range(2)]
    assert [admission.admit(c) for c in lb] == [0, 0], "a trusted proxy is exempt"
    admission.spoke(a1)  # mid-request: never shed
    admission.spoke(lb[0])
    admission.idle(lb[0])  # answered, waiting for its next request
    newcomer = _FakeConn("2.2.2.2")
    assert admission.admit(newcomer) == 0, "full: the silent ones made room"
    assert a2.closed and lb[1].closed and not a1.closed
    assert not lb[0].closed, "idle keep-alive ones go only when no silent one is left"
    admission.spoke(newcomer)
    busy = _FakeConn("3.3.3.3")
    assert admission.admit(busy) == 0  # four open now: full
    admission.spoke(busy)
    last = _FakeConn("4.4.4.4")
    assert admission.admit(last) == 0 and lb[0].closed, "no silent one left: the idle one"
    admission.spoke(last)
    assert admission.admit(_FakeConn("5.5.5.5")) == 503, "all four busy: refused"
    admission.release(a1)
    assert admission.admit(_FakeConn("1.1.1.1")) == 0, "a released place is free again"


def _nofile_of(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-file limit in /proc/{pid}/limits")


def _proxy_workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(c)
        for c in children
        if b"rivetr_git.proxy.worker" in Path(f"/proc/{c}/cmdline").read_bytes()
    ]


@pytest.mark.docker
async def test_the_daemon_raises_nofile_and_its_workers_apply_the_settings(
    docker_engine: None, tmp_path: Path
) -> None:
    srv = Server(
        tmp_path / "data",
        {"RIVETR_PROXY_MAX_CONNS_PER_IP": "2", "RIVETR_PROXY_FIRST_BYTE_TIMEOUT": "1"},
    )
    with _soft_nofile(1024):  # the daemon is born with the common default
        srv.start()
    try:
        assert srv.proc is not None
        workers = _proxy_workers_of(srv.proc.pid)
        assert workers, "the daemon runs one proxy worker by default"
        for pid in (srv.proc.pid, *workers):
            soft, hard = _nofile_of(pid)
            assert soft == hard, f"process {pid} kept a soft nofile of {soft} (hard {hard})"
        held = [
            await asyncio.open_connection("127.0.0.1", srv.proxy_port, local_addr=(FLOODER, 0))
            for _ in range(2)
        ]
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", srv.proxy_port, local_addr=(FLOODER, 0)
            )
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 429 "), answer[:60]
            assert await _get(srv.proxy_port, CLIENT) == 404  # no app "web" here, but answered
            assert await _closed_within(held[0][0], 3), "silent past proxy_first_byte_timeout"
        finally:
            for _, w in held:
                w.close()
    finally:
        srv.stop()
