"""GET /metrics: Prometheus' text format, from prometheus-client in a registry of our own.

Deploy counters and histograms are fed as deployments finish (Deployer.observe); gauges
that mirror state (container restarts, certificate expiry) are refreshed per scrape.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rivetr_git.models import Deployment, Status
from rivetr_git.pipeline.deployer import Job
from rivetr_git.store.database import Store

_DEPLOY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


def _parse_time(value: str) -> float:
    return datetime.datetime.fromisoformat(value).timestamp()


class ProxyCollector(Collector):
    """The data plane's per-app counts (summed over its processes), read at each scrape."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        snap = self._stats()
        requests = CounterMetricFamily(
            "rivetr_proxy_requests",
            "proxied requests by app and status class",
            labels=["app", "status_class"],
        )
        for app, classes in sorted(snap.get("requests", {}).items()):
            for cls, n in sorted(classes.items()):
                requests.add_metric([app, cls], n)
        latency = HistogramMetricFamily(
            "rivetr_proxy_request_seconds",
            "time from request to the end of the answer",
            labels=["app"],
        )
        bounds = snap.get("buckets", [])
        for app, counts in sorted(snap.get("latency", {}).items()):
            cumulative, running = [], 0.0
            for bound, n in zip([*map(str, bounds), "+Inf"], counts[:-1], strict=True):
                running += n
                cumulative.append((bound, running))
            latency.add_metric([app], cumulative, sum_value=counts[-1])
        errors = CounterMetricFamily(
            "rivetr_proxy_upstream_errors",
            "answers 502/504: the app's container failed",
            labels=["app"],
        )
        for app, n in sorted(snap.get("errors", {}).items()):
            errors.add_metric([app], n)
        yield from (requests, latency, errors)


class Metrics:
    def __init__(
        self,
        store: Store,
        restarts: Mapping[str, int],
        proxy_stats: Callable[[], dict[str, Any]],
    ) -> None:
        self._store = store
        self._restarts = restarts
        self._tasks: set[asyncio.Task[None]] = set()
        r = self.registry = CollectorRegistry()
        self.deploys = Counter(
            "rivetr_deploys",
            "finished deployments by app and result",
            ["app", "result"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "rivetr_deploy_stage_seconds",
            "time each pipeline stage took",
            ["stage"],
            buckets=_DEPLOY_BUCKETS,
            registry=r,
        )
        self.push_to_live = Histogram(
            "rivetr_push_to_live_seconds",
            "from a deployment's creation (push, deploy, webhook fetch done) to live",
            buckets=_DEPLOY_BUCKETS,
            registry=r,
        )
        self.webhook_to_live = Histogram(
            "rivetr_webhook_to_live_seconds",
            "from a webhook's arrival to its commit live",
            buckets=_DEPLOY_BUCKETS,
            registry=r,
        )
        self.restarts = Gauge(
            "rivetr_container_restarts",
            "crashed containers restarted by the monitor",
            ["app"],
            registry=r,
        )
        self.cert_expiry = Gauge(
            "rivetr_certificate_expiry_timestamp_seconds",
            "when each app's certificate expires (Unix time)",
            ["app"],
            registry=r,
        )
        r.register(ProxyCollector(proxy_stats))

    def deploy_finished(self, final: Deployment) -> None:
        """Deployer.observe callback: count it, and time its stages from its stored log."""
        self.deploys.labels(final.app_name, final.status.value).inc()
        if final.status is Status.RUNNING and final.finished_at:
            seconds = _parse_time(final.finished_at) - _parse_time(final.created_at)
            self.push_to_live.observe(max(seconds, 0.0))
        task = asyncio.create_task(self._stages(final.id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def webhook_queued(self, job: Job, received: float) -> None:
        async def wait() -> None:
            final = await asyncio.shield(job.result)
            if final.status is Status.RUNNING:
                self.webhook_to_live.observe(asyncio.get_running_loop().time() - received)

        task = asyncio.create_task(wait())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stages(self, deployment_id: int) -> None:
        await asyncio.sleep(0.5)  # the log's last lines are flushed in batches
        starts: dict[str, float] = {}
        last = 0.0
        for line in await self._store.get_logs(deployment_id):
            starts.setdefault(line.stage, line.at)
            last = max(last, line.at)
        ordered = sorted(starts.items(), key=lambda item: item[1])
        for (stage, began), (_, ended) in zip(ordered, [*ordered[1:], ("", last)], strict=True):
            self.stage_seconds.labels(stage).observe(max(ended - began, 0.0))

    async def render(self) -> bytes:
        for app, count in list(self._restarts.items()):
            self.restarts.labels(app).set(count)
        for record in await self._store.all_tls():
            if record.not_after:
                self.cert_expiry.labels(record.app).set(_parse_time(record.not_after))
        return generate_latest(self.registry)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
