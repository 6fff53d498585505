"""Pure-logic unit tests of the SSH gate's bookkeeping (a fake clock; no sockets). The same
behaviour over real sockets is in test_ssh_limits.py."""

from __future__ import annotations

import logging

import pytest

from rivetr_git.receiver.gate import ConnectionGate, GateLimits, RefusalLog


def gate(
    rate: float = 5.0, burst: int = 3, per_source: int = 5, overall: int = 8
) -> tuple[ConnectionGate, list[float]]:
    g = ConnectionGate(
        GateLimits(
            max_startups=overall,
            max_startups_per_source=per_source,
            handshake_rate=rate,
            handshake_burst=burst,
        )
    )
    now = [100.0]
    g._clock = lambda: now[0]  # a fake clock: pure-logic test
    return g, now


async def test_burst_then_rate_then_refusal() -> None:
    g, _ = gate()
    waits = [g.admit("10.0.0.1") for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:5] == pytest.approx([0.2, 0.4])
    assert waits[5] is None  # over the per-source cap of 5
    assert g.admit("10.0.0.2") == 0.0  # another address has its own bucket and count
    g.refusals.close()


async def test_a_client_that_leaves_while_waiting_gives_its_token_back() -> None:
    g, now = gate()
    for _ in range(3):
        g.admit("10.0.0.1")
    assert g.admit("10.0.0.1") == pytest.approx(0.2)
    g.closed("10.0.0.1", before_start=True)
    assert g.admit("10.0.0.1") == pytest.approx(0.2)  # not 0.4: the token came back
    now[0] += 1.0  # tokens refill at 5/s
    assert g.admit("10.0.0.1") == 0.0
    g.refusals.close()


async def test_authenticated_connections_no_longer_count() -> None:
    g, _ = gate(rate=0, per_source=2, overall=3)
    assert g.admit("a") == 0.0 and g.admit("a") == 0.0
    assert g.admit("a") is None
    g.authenticated("a")
    assert g.admit("a") == 0.0
    assert g.admit("b") == 0.0
    assert g.pending == 3
    assert g.admit("c") is None  # the overall cap
    g.refusals.close()


async def test_refusals_are_summed_not_logged_one_by_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="rivetr_git.receiver.gate")
    refusals = RefusalLog(interval=60)
    for _ in range(50):
        refusals.refused("over ssh_max_startups_per_source", "10.0.0.9")
    refusals.refused("over ssh_max_auth_tries", "10.0.0.8")
    assert len(caplog.records) == 1  # the first one, at once
    refusals.close()  # the end of the interval (or shutdown) writes the sum
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage() == (
        "refused 50 SSH connection(s) (49 over ssh_max_startups_per_source, 1 over "
        "ssh_max_auth_tries); most from 10.0.0.9 (49)"
    )
