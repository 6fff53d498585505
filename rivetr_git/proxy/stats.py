"""Request counts and latencies of the built-in data plane, per app, for /metrics.

Plain counters (the proxy imports nothing of Prometheus): each process keeps its own, proxy
worker processes send theirs to the daemon (proxy/worker.py, proxy/workers.py), and
`merge` sums them. Counts only grow; a worker that exits hands its last counts to the
daemon's retired total, so the sums never go down.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

# Upper bounds (seconds) of the latency histogram's buckets; +Inf is implicit.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Snapshot = dict[str, Any]  # JSON-able: {"requests": {...}, "latency": {...}, "errors": {...}}


class ProxyStats:
    def __init__(self) -> None:
        self.requests: dict[str, dict[str, int]] = {}  # app -> status class ("2xx") -> n
        self.latency: dict[str, list[float]] = {}  # app -> per bucket counts, +Inf, sum
        self.errors: dict[str, int] = {}  # app -> upstream errors (502, 504)
        self.version = 0  # grows with every request: a worker reports only when it moved

    def record(self, app: str, status: int, seconds: float) -> None:
        classes = self.requests.get(app)
        if classes is None:
            classes = self.requests[app] = {}
        cls = f"{status // 100}xx" if status else "none"
        classes[cls] = classes.get(cls, 0) + 1
        counts = self.latency.get(app)
        if counts is None:
            counts = self.latency[app] = [0.0] * (len(BUCKETS) + 2)
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        counts[-1] += seconds
        if status in (502, 504):
            self.errors[app] = self.errors.get(app, 0) + 1
        self.version += 1

    def snapshot(self) -> Snapshot:
        return {
            "buckets": list(BUCKETS),
            "requests": {app: dict(c) for app, c in self.requests.items()},
            "latency": {app: list(c) for app, c in self.latency.items()},
            "errors": dict(self.errors),
        }


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of several processes' snapshots."""
    total = ProxyStats()
    for snap in snapshots:
        for app, classes in snap.get("requests", {}).items():
            mine = total.requests.setdefault(app, {})
            for cls, n in classes.items():
                mine[cls] = mine.get(cls, 0) + n
        for app, counts in snap.get("latency", {}).items():
            mine_l = total.latency.setdefault(app, [0.0] * (len(BUCKETS) + 2))
            for i, n in enumerate(counts):
                mine_l[i] += n
        for app, n in snap.get("errors", {}).items():
            total.errors[app] = total.errors.get(app, 0) + n
    return total.snapshot()
