"""proxy_workers: N uvloop processes on one SO_REUSEPORT port, fed by the daemon's table."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.proxy.workers import ProxyWorkers

WORKERS = 2


@dataclass
class Farm:
    workers: ProxyWorkers
    routes: RouteTable
    upstream_port: int
    release: asyncio.Event
    log_dir: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.workers.bound_port}"

    def upstream(self, app: str, deployment_id: int = 1) -> Upstream:
        return Upstream(
            app=app, host="127.0.0.1", port=self.upstream_port, deployment_id=deployment_id
        )

    def log_lines(self) -> dict[str, list[dict[str, object]]]:
        return {
            p.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(self.log_dir.glob("access.*.log"))
        }


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    release = asyncio.Event()

    async def hello(request: web.Request) -> web.Response:
        if request.path == "/wait":
            await release.wait()
        return web.Response(text=f"hello {request.headers['Host']}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    routes = RouteTable("localhost")
    config = ProxyConfig(access_log=tmp_path / "access.log")
    workers = ProxyWorkers(routes, "127.0.0.1", 0, config, WORKERS)
    await workers.start()
    try:
        yield Farm(workers, routes, int(runner.addresses[0][1]), release, tmp_path)
    finally:
        release.set()
        await workers.close()
        await runner.cleanup()


async def _get(base: str, host: str, path: str = "/") -> tuple[int, str]:
    # A fresh connection each time, so the kernel may pick any worker.
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.get(base + path, headers={"Host": host}) as resp,
    ):
        return resp.status, await resp.text()


async def _until(condition: object, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_every_worker_serves_a_new_route(farm: Farm) -> None:
    assert await _get(farm.base, "new.localhost") == (404, await _404_body(farm))
    farm.routes.set(farm.upstream("new"))
    assert await farm.workers.wait_synced(10)
    answers = await asyncio.gather(*(_get(farm.base, "new.localhost") for _ in range(40)))
    # Both workers said they applied the table; one that had not would answer 404 here.
    assert set(answers) == {(200, "hello new.localhost")}

    async def both_workers_logged() -> bool:
        lines = farm.log_lines()
        return len(lines) == WORKERS and all(
            any(line["host"] == "new.localhost" and line["status"] == 200 for line in ls)
            for ls in lines.values()
        )

    await _until(both_workers_logged)
    farm.routes.remove("new")
    await _until(lambda: _all_404(farm))


async def _404_body(farm: Farm) -> str:
    return (await _get(farm.base, "nobody.localhost"))[1]


async def _all_404(farm: Farm) -> bool:
    answers = await asyncio.gather(*(_get(farm.base, "new.localhost") for _ in range(20)))
    return all(status == 404 for status, _ in answers)


async def test_drain_waits_for_requests_in_every_worker(farm: Farm) -> None:
    old = farm.upstream("app", deployment_id=1)
    farm.routes.set(old)
    slow = [asyncio.create_task(_get(farm.base, "app.localhost", "/wait")) for _ in range(6)]
    await asyncio.sleep(0.5)  # the requests reach the workers and wait in the app
    farm.routes.set(farm.upstream("app", deployment_id=2))
    assert await farm.routes.wait_drained(old, 0.5) is False
    farm.release.set()
    assert await farm.routes.wait_drained(old, 10) is True
    assert [await t for t in slow] == [(200, "hello app.localhost")] * 6


async def test_a_dead_worker_is_replaced_and_gets_the_routes(farm: Farm) -> None:
    farm.routes.set(farm.upstream("app"))
    victim = farm.workers.pids[0]
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        pids = farm.workers.pids
        return victim not in pids and len(pids) == WORKERS

    await _until(replaced)
    answers = await asyncio.gather(*(_get(farm.base, "app.localhost") for _ in range(30)))
    assert set(answers) == {(200, "hello app.localhost")}
