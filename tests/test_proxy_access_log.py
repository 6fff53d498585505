"""The access log: one JSON line per request, every field, rotated by size."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from rivetr_git.proxy.config import ProxyConfig
from tests.proxy_env import start_env


async def test_one_json_line_per_request(tmp_path: Path, client: aiohttp.ClientSession) -> None:
    log = tmp_path / "logs" / "access.log"
    async with start_env(ProxyConfig(access_log=log)) as env:
        async with client.post(
            env.base + "/a%2Fb?x=1", data=b"12345", headers={"Host": "WEB.localhost:8080"}
        ) as resp:
            body = await resp.read()
        async with client.get(env.base + "/", headers={"Host": "nobody.localhost"}) as resp:
            assert resp.status == 404
    # Closing the proxy flushes the writer thread.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["host"] == "web.localhost"
    assert first["method"] == "POST"
    assert first["path"] == "/a%2Fb?x=1"
    assert first["status"] == 200
    assert first["bytes"] == len(body)
    assert first["upstream"] == f"127.0.0.1:{env.upstream_port}"
    assert 0 <= first["duration_ms"] < 10_000
    assert first["time"] > 1.7e9
    assert second["status"] == 404 and second["upstream"] == "-"


async def test_the_access_log_rotates(tmp_path: Path, client: aiohttp.ClientSession) -> None:
    log = tmp_path / "access.log"
    config = ProxyConfig(access_log=log, access_log_max_bytes=1000, access_log_backups=2)
    async with start_env(config) as env:
        for i in range(60):
            async with client.get(f"{env.base}/r{i}", headers={"Host": "web.localhost"}) as r:
                await r.read()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["access.log", "access.log.1", "access.log.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    newest = log.read_text().splitlines()
    assert json.loads(newest[-1])["path"] == "/r59"
