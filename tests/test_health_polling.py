"""The health check's pace, on a fake clock: probes come often, failures count by time.

An app that takes half a second to listen (`npm start`) used to be seen up to 0.3 s late,
because the pause between probes doubled up to `health_interval`; probing faster would
have used up `health_retries` sooner. Now probes run every 50 ms and a failure counts at
most once per interval, so the budget stays about retries x interval.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator

import pytest

from rivetr_git.errors import HealthCheckFailed
from rivetr_git.pipeline import health
from rivetr_git.pipeline.health import HealthPolicy
from rivetr_git.runtime.base import ContainerSpec
from tests.fakes import FakeRuntime


class FakeClock:
    """Time that moves only when the code under test sleeps or a probe takes time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.probes: list[float] = []  # when each probe started

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _install(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, answers_at: float, probe_takes: float
) -> None:
    async def probe(host: str, port: int, path: str, host_header: str, timeout: float) -> str:
        clock.probes.append(clock.now)
        clock.now += probe_takes
        return "" if clock.now >= answers_at else "connection failed (refused)"

    monkeypatch.setattr(health, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(health, "asyncio", types.SimpleNamespace(sleep=clock.sleep))
    monkeypatch.setattr(health, "probe", probe)


Rig = tuple[FakeRuntime, str, FakeClock]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    """A running fake container and a fake clock (installed by each test's `_install`)."""
    runtime = FakeRuntime()
    runtime.images.add("img")
    try:
        info = await runtime.run(ContainerSpec(name="hp", image="img", port=5000))
        yield runtime, info.id, FakeClock()
    finally:
        await runtime.close()


async def test_an_app_that_starts_listening_late_is_seen_within_one_poll(
    monkeypatch: pytest.MonkeyPatch,
    rig: Rig,
) -> None:
    runtime, cid, clock = rig
    _install(monkeypatch, clock, answers_at=0.45, probe_takes=0.001)
    policy = HealthPolicy(path="/", interval=0.5, timeout=2.0, retries=60)
    _, seconds = await health.wait_healthy(runtime, cid, 1, "hp.localhost", policy)
    # The old doubling pauses (0.02 ... 0.32) saw it at 0.62 s.
    assert 0.45 <= seconds <= 0.45 + health._POLL + 0.002
    gaps = [b - a for a, b in zip(clock.probes, clock.probes[1:], strict=False)]
    assert max(gaps) <= health._POLL + 0.002


async def test_failures_count_once_per_interval_however_often_it_probes(
    monkeypatch: pytest.MonkeyPatch,
    rig: Rig,
) -> None:
    runtime, cid, clock = rig
    _install(monkeypatch, clock, answers_at=float("inf"), probe_takes=0.001)
    policy = HealthPolicy(path="/", interval=0.5, timeout=2.0, retries=4)
    with pytest.raises(HealthCheckFailed, match="failed 4 times"):
        await health.wait_healthy(runtime, cid, 1, "hp.localhost", policy)
    # Four counted failures, one per interval: the first at once, the last 1.5 s later.
    assert 1.5 <= clock.now <= 1.5 + health._POLL + 0.01
    assert len(clock.probes) > 20  # it kept asking in between


async def test_attempts_slower_than_the_interval_each_count(
    monkeypatch: pytest.MonkeyPatch,
    rig: Rig,
) -> None:
    runtime, cid, clock = rig
    # Every probe runs into its 0.3 s timeout: each is a failure on its own.
    _install(monkeypatch, clock, answers_at=float("inf"), probe_takes=0.3)
    policy = HealthPolicy(path="/", interval=0.2, timeout=0.3, retries=3)
    with pytest.raises(HealthCheckFailed, match="failed 3 times"):
        await health.wait_healthy(runtime, cid, 1, "hp.localhost", policy)
    assert len(clock.probes) == 3


async def test_a_container_that_exits_fails_the_check_without_waiting_out_the_budget(
    monkeypatch: pytest.MonkeyPatch,
    rig: Rig,
) -> None:
    runtime, cid, clock = rig
    _install(monkeypatch, clock, answers_at=float("inf"), probe_takes=0.001)
    await runtime.crash(cid, exit_code=3)
    policy = HealthPolicy(path="/", interval=0.5, timeout=2.0, retries=60)
    with pytest.raises(HealthCheckFailed, match=r"container exited \(exit code 3\)"):
        await health.wait_healthy(runtime, cid, 1, "hp.localhost", policy)
    assert clock.now < 0.01
