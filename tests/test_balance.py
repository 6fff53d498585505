"""Unit tests for the balancer and multi-backend upstreams (pure logic, no engine)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

from rivetr_git.proxy.balance import RETRY_AFTER, Balancer
from rivetr_git.proxy.nginx_config import upstream_block
from rivetr_git.proxy.routes import InFlight, Upstream

THREE = Upstream(
    app="a",
    host="127.0.0.1",
    port=1001,
    deployment_id=7,
    others=(("127.0.0.1", 1002), ("127.0.0.1", 1003)),
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ports(order: list[Upstream]) -> list[int]:
    return [b.port for b in order]


def test_one_backend_is_itself() -> None:
    single = Upstream(app="a", host="127.0.0.1", port=1, deployment_id=1)
    assert Balancer(InFlight()).order(single) == [single]
    assert single.backends() == [single]


def test_backends_are_counted_and_drained_like_a_single_release() -> None:
    backends = THREE.backends()
    assert ports(backends) == [1001, 1002, 1003]
    # The first backend is the release's own upstream (what retire drains): no `others`.
    assert backends[0] == Upstream(app="a", host="127.0.0.1", port=1001, deployment_id=7)
    assert all(b.others == () and b.deployment_id == 7 for b in backends)


def test_round_robin_among_equals() -> None:
    balancer = Balancer(InFlight())
    firsts = Counter(balancer.order(THREE)[0].port for _ in range(30))
    assert firsts == {1001: 10, 1002: 10, 1003: 10}


def test_least_in_flight_first() -> None:
    in_flight = InFlight()
    balancer = Balancer(in_flight)
    backends = THREE.backends()
    in_flight.enter(backends[0])
    in_flight.enter(backends[0])
    in_flight.enter(backends[1])
    for _ in range(5):
        assert ports(balancer.order(THREE)) == [1003, 1002, 1001]


def test_a_failed_backend_is_a_last_resort_until_it_answers_or_time_passes() -> None:
    clock = Clock()
    balancer = Balancer(InFlight(), clock)
    dead = THREE.backends()[1]
    balancer.failed(dead)
    for _ in range(6):
        assert balancer.order(THREE)[-1] == dead
    clock.now += RETRY_AFTER + 0.1
    assert dead in {balancer.order(THREE)[0] for _ in range(3)}
    balancer.failed(dead)
    balancer.answered(dead)
    assert dead in {balancer.order(THREE)[0] for _ in range(3)}


def test_upstream_survives_the_json_trip_to_proxy_workers() -> None:
    again = Upstream(**json.loads(json.dumps(dataclasses.asdict(THREE))))
    single = Upstream(**json.loads(json.dumps(dataclasses.asdict(THREE.backends()[0]))))
    assert hash(single) == hash(THREE.backends()[0])
    assert again == THREE and hash(again) == hash(THREE)


def test_nginx_upstream_block_lists_every_container() -> None:
    block = upstream_block(THREE)
    assert "least_conn;" in block
    for port in (1001, 1002, 1003):
        assert f"server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" in block
    single = upstream_block(THREE.backends()[0])
    assert "server 127.0.0.1:1001 max_fails=0;" in single and "least_conn" not in single
