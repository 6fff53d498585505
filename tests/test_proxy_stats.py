"""Per-app request counts of the built-in data plane, summed across proxy worker processes
(what /metrics shows), and kept when a worker dies."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import Any

from rivetr_git.proxy.routes import Upstream
from rivetr_git.proxy.stats import BUCKETS, ProxyStats, merge
from tests.test_proxy_workers import WORKERS, Farm, _get, _until, farm

__all__ = ["farm"]  # the fixture, used by name


def test_merge_sums_counts_latencies_and_errors() -> None:
    one, two = ProxyStats(), ProxyStats()
    one.record("a", 200, 0.001)
    one.record("a", 502, 0.2)
    two.record("a", 204, 20.0)
    two.record("b", 0, 0.01)
    total = merge([one.snapshot(), two.snapshot(), {}])
    assert total["requests"] == {"a": {"2xx": 2, "5xx": 1}, "b": {"none": 1}}
    assert total["errors"] == {"a": 1}
    counts = total["latency"]["a"]
    assert len(counts) == len(BUCKETS) + 2
    assert counts[0] == 1 and counts[len(BUCKETS)] == 1  # 1 ms and the +Inf bucket
    assert sum(counts[:-1]) == 3 and abs(counts[-1] - 20.201) < 1e-9


async def test_workers_counts_are_summed_and_survive_a_dead_worker(farm: Farm) -> None:
    farm.routes.set(farm.upstream("stats"))
    with socket.socket() as s:  # nothing listens there: 502
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    farm.routes.set(Upstream(app="gone", host="127.0.0.1", port=dead_port, deployment_id=1))
    assert await farm.workers.wait_synced(10)
    await asyncio.gather(*(_get(farm.base, "stats.localhost") for _ in range(40)))
    assert (await _get(farm.base, "gone.localhost"))[0] == 502

    def total() -> dict[str, Any]:
        return farm.workers.proxy_stats()

    async def all_counted() -> bool:
        snap = total()
        return snap["requests"].get("stats") == {"2xx": 40} and "gone" in snap["errors"]

    await _until(all_counted)
    # Both processes served some: the sum is over workers, not one worker's view.
    assert both_reported(farm)
    assert sum(total()["latency"]["stats"][:-1]) == 40
    os.kill(farm.workers.pids[0], signal.SIGKILL)

    async def replaced() -> bool:
        return len(farm.workers.pids) == WORKERS and all(
            w.process.returncode is None for w in farm.workers._workers
        )

    await _until(replaced)
    assert total()["requests"]["stats"] == {"2xx": 40}  # the dead worker's counts stay


def both_reported(farm: Farm) -> bool:
    return all(w.stats.get("requests", {}).get("stats") for w in farm.workers._workers)
