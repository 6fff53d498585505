"""Live health checks: a live app that hangs is treated like one that crashed.

Every web container of a live release is probed every `live_check_interval` seconds (per
app: `checks:set APP live_interval=`; 0 turns it off) with the app's health check in force
(path and per-attempt timeout). After `live_check_failures` failures in a row an
`app.unhealthy` event goes out and the container is handed to the crash monitor
(after_switch/monitor.py), which stops it and restarts it with the same backoff and
crash-loop rules as a container that exited. An answer that is slow but within the
timeout passes. The monitor skips releases inside their post-switch watch window (the
watcher checks those), stopped and crashed apps, so this does too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from rivetr_git.models import App, Deployment
from rivetr_git.notify import Notifier
from rivetr_git.pipeline.health import HealthPolicy, probe
from rivetr_git.pipeline.scale import process_of
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import LABEL_DEPLOYMENT, LABEL_ONEOFF, ContainerInfo
from rivetr_git.settings import Settings

log = logging.getLogger(__name__)

# The health check in force for an app (Deployer.health_in_force).
PolicyOf = Callable[[App], Awaitable[HealthPolicy]]
# Hand a container over to the crash rules, with the reason (Monitor.unhealthy).
OnUnhealthy = Callable[[str, str], Awaitable[None]]


class LiveChecks:
    """Probes in the background, at most one at a time per container, so a slow app never
    holds up the crash monitor's loop."""

    def __init__(
        self,
        settings: Settings,
        routes: RouteTable,
        notifier: Notifier,
        policy_of: PolicyOf,
        on_unhealthy: OnUnhealthy,
    ) -> None:
        self._settings = settings
        self._routes = routes
        self._notifier = notifier
        self._policy_of = policy_of
        self._on_unhealthy = on_unhealthy
        self._failures: dict[str, int] = {}  # container id -> failed probes in a row
        self._last: dict[str, float] = {}  # container id -> when its last probe began
        self._probing: dict[str, asyncio.Task[None]] = {}

    def web_containers(
        self, d: Deployment, containers: dict[str, ContainerInfo]
    ) -> list[ContainerInfo]:
        """The release's web containers (a compose group: its routed service)."""
        if d.build_type == "compose":
            found = containers.get(d.container_id or "")
            return [found] if found is not None else []
        return [
            c
            for c in containers.values()
            if c.labels.get(LABEL_DEPLOYMENT) == str(d.id)
            and not c.labels.get(LABEL_ONEOFF)
            and (c.id == d.container_id or process_of(c).startswith("web."))
        ]

    def check(self, app: App, d: Deployment, containers: dict[str, ContainerInfo]) -> set[str]:
        """Start the probes that are due for `d`'s web containers; the ids looked at."""
        interval = app.live_check_interval
        if interval is None:
            interval = self._settings.live_check_interval
        seen: set[str] = set()
        if interval <= 0:
            return seen
        now = time.monotonic()
        for c in self.web_containers(d, containers):
            seen.add(c.id)
            if not c.running or c.host_port is None:
                self._failures.pop(c.id, None)  # the crash monitor's case, not ours
                continue
            if c.id in self._probing or now - self._last.get(c.id, -interval) < interval:
                continue
            self._last[c.id] = now
            task = asyncio.create_task(self._probe(app, d, c, c.host_port))
            self._probing[c.id] = task
            task.add_done_callback(functools.partial(self._done, c.id))
        return seen

    def _done(self, cid: str, _task: asyncio.Task[None]) -> None:
        self._probing.pop(cid, None)

    def forget(self, keep: set[str]) -> None:
        """Drop the state of containers no longer checked."""
        for table in (self._failures, self._last):
            for gone in set(table) - keep:
                del table[gone]

    def close(self) -> None:
        for task in list(self._probing.values()):
            task.cancel()

    async def _probe(self, app: App, d: Deployment, c: ContainerInfo, port: int) -> None:
        try:
            policy = await self._policy_of(app)
            host = self._routes.hostname(app.name)
            failed = await probe("127.0.0.1", port, policy.path, host, policy.timeout)
            if failed is None:
                self._failures.pop(c.id, None)
                return
            count = self._failures[c.id] = self._failures.get(c.id, 0) + 1
            process = process_of(c)
            log.warning(
                "%s (#%s) %s: live health check failed: %s", app.name, d.id, process, failed
            )
            if count < self._settings.live_check_failures:
                return
            del self._failures[c.id]
            why = f"{process}: live health check failed {count} times in a row (last: {failed})"
            self._notifier.notify(
                "app.unhealthy", app, deployment_id=d.id, commit=d.commit_sha, reason=why
            )
            await self._on_unhealthy(c.id, why)
        except asyncio.CancelledError:
            raise
        except Exception:  # a probe must never take the monitor down with it
            log.exception("%s: live health check of %s failed", app.name, c.id[:12])
