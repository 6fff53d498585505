"""End to end through every data plane: a real daemon, real pushes, real containers."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.helpers import Key, Server
from tests.test_switch import cgi_repo


@pytest.fixture(params=["in-daemon", "workers", "nginx"])
def worker_server(
    docker_engine: None, tmp_path: Path, keys: dict[str, Key], request: pytest.FixtureRequest
) -> Iterator[Server]:
    """The proxy inside the daemon, two rivetr worker processes, or two nginx workers."""
    env = {"RIVETR_PROXY_WORKERS": "0" if request.param == "in-daemon" else "2"}
    if request.param == "nginx":
        env["RIVETR_PROXY_BACKEND"] = "nginx"
    yield from running_server(tmp_path / "data", keys, env=env)


def test_route_swaps_under_concurrent_requests(
    worker_server: Server, keys: dict[str, Key], workdir: Path, request: pytest.FixtureRequest
) -> None:
    server = worker_server
    mode = request.node.callspec.params["worker_server"]
    repo = cgi_repo(workdir / "app", keys["alice"], "v1")
    assert repo.push(server.remote("swap")).returncode == 0
    answers: Counter[tuple[int, str]] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            answers[server.get("swap", timeout=10)] += 1

    slow: dict[str, tuple[int, str]] = {}
    clients = [threading.Thread(target=hammer) for _ in range(4)]
    clients.append(
        threading.Thread(
            target=lambda: slow.__setitem__("r", server.get("swap", "/cgi-bin/slow", timeout=20))
        )
    )
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)  # the slow request is now in the v1 container, via some worker
        for version in ("v2", "v3"):
            repo.write("www/index.html", f"{version}\n")
            repo.commit(version)
            result = repo.push(server.remote("swap"))
            assert result.returncode == 0, result.stderr
            # Every worker routes to the new release as soon as the push says it is live.
            seen = {server.get("swap") for _ in range(20)}
            assert seen == {(200, f"{version}\n")}
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
    assert slow["r"] == (200, "slow v1\n")  # drained across both workers, not cut off
    assert set(answers) <= {(200, "v1\n"), (200, "v2\n"), (200, "v3\n")}, answers
    assert sum(answers.values()) > 20
    logs = sorted((server.data_dir / "logs").glob("access*.log"))
    expected = {"workers": ["access.0.log", "access.1.log"]}.get(mode, ["access.log"])
    assert [p.name for p in logs] == expected
    lines = [json.loads(line) for p in logs for line in p.read_text().splitlines()]
    assert {line["host"] for line in lines} == {"swap.localhost"}
    assert {line["status"] for line in lines} == {200}


def test_custom_domains_and_stopped_apps_reach_every_worker(
    worker_server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    from tests.test_admin_verbs import get_host, ok

    server, alice = worker_server, keys["alice"]
    repo = cgi_repo(workdir / "app", alice, "v1")
    assert repo.push(server.remote("aliased")).returncode == 0
    ok(server, alice, "domains:add", "aliased", "www.aliased.test")
    # 20 requests over fresh connections spread across both workers.
    assert {get_host(server, "www.aliased.test") for _ in range(20)} == {200}
    ok(server, alice, "ps:stop", "aliased")
    assert {server.get("aliased")[0] for _ in range(20)} == {503}
    ok(server, alice, "ps:start", "aliased")
    ok(server, alice, "domains:remove", "aliased", "www.aliased.test")
    assert {get_host(server, "www.aliased.test") for _ in range(20)} == {404}
    assert {server.get("aliased")[0] for _ in range(20)} == {200}
