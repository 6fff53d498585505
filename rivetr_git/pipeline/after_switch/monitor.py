"""The container monitor: a live app whose container exits is restarted, with backoff.

After `crash_restart_limit` quick crashes in a row the app is marked crashed: the proxy
answers 503 for it and a `container.crashed` event goes out, until the next deploy. A run
longer than `crash_stable_after` resets the count. A release still inside its post-switch
watch window is left to the watcher, which rolls it back instead.

Every minute it also sweeps up stopped containers of finished deployments and stray
build dirs (cleanup.sweep).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from rivetr_git.errors import RivetrError
from rivetr_git.models import App, Deployment, Status
from rivetr_git.notify import Notifier
from rivetr_git.pipeline.after_switch import cleanup
from rivetr_git.pipeline.labels import labels
from rivetr_git.pipeline.promote import upstream_of
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import ContainerInfo, Runtime
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0
SWEEP_EVERY = 60  # checks between clean-up sweeps


@dataclass
class _Crashes:
    count: int
    started: float  # when the container was last (re)started
    restart_at: float | None = None  # set while a restart is pending


def backoff(count: int, longest: float) -> float:
    """Seconds to wait before the restart after the `count`-th quick crash: 1, 2, 4, ..."""
    return float(min(2.0 ** (count - 1), longest))


class Monitor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        runtime: Runtime,
        routes: RouteTable,
        instance: str,
        notifier: Notifier,
        is_watched: Callable[[int], bool],
    ) -> None:
        self._settings = settings
        self._store = store
        self._runtime = runtime
        self._routes = routes
        self._instance = instance
        self._notifier = notifier
        self._is_watched = is_watched
        self._crashes: dict[int, _Crashes] = {}

    async def run(self) -> None:
        checks = 0
        while True:
            await asyncio.sleep(CHECK_EVERY)
            checks += 1
            try:
                await self.check()
                if checks % SWEEP_EVERY == 0:
                    # Builds never run longer than build_timeout: older build dirs are strays.
                    await cleanup.sweep(
                        self._store,
                        self._runtime,
                        self._instance,
                        self._settings.data_dir / "tmp",
                        max_age=self._settings.build_timeout + 60,
                    )
            except RivetrError as exc:
                log.warning("container monitor: %s", exc)

    async def check(self) -> None:
        apps = {a.id: a for a in await self._store.list_apps()}
        containers = {c.id: c for c in await self._runtime.list_containers(labels(self._instance))}
        live = await self._store.deployments_with_status([Status.RUNNING])
        for d in live:
            app = apps.get(d.app_id)
            if app is None or app.crashed_reason or app.stopped or not d.container_id:
                continue  # given up on, stopped by its owner, or never started
            if self._is_watched(d.id):
                continue
            await self._check_one(app, d, containers.get(d.container_id))
        live_ids = {d.id for d in live}
        for gone in set(self._crashes) - live_ids:
            del self._crashes[gone]

    async def _check_one(self, app: App, d: Deployment, info: ContainerInfo | None) -> None:
        now = time.monotonic()
        s = self._settings
        state = self._crashes.get(d.id)
        if info is not None and info.running:
            if state is not None and now - state.started > s.crash_stable_after:
                del self._crashes[d.id]  # a long stable run: forget earlier crashes
            return
        if info is None:
            await self._give_up(app, d, "its container was removed")
            return
        if state is None or state.restart_at is None:  # a new crash
            quick = state is not None and now - state.started < s.crash_stable_after
            count = state.count + 1 if quick and state is not None else 1
            reason = f"container exited with code {info.exit_code}"
            if count > s.crash_restart_limit:
                await self._give_up(app, d, f"{reason}, {count - 1} restarts did not help")
                return
            delay = backoff(count, s.crash_backoff_max)
            log.warning("%s (#%s): %s; restart %d in %gs", app.name, d.id, reason, count, delay)
            self._crashes[d.id] = _Crashes(count=count, started=now, restart_at=now + delay)
            return
        if now >= state.restart_at:
            if not await self._still_ours(app):
                return
            started = await self._runtime.start(info.id)
            state.started, state.restart_at = time.monotonic(), None
            if not await self._still_ours(app):
                return  # destroyed or stopped while it started: leave the route alone
            if started.host_port is not None:
                # Docker may publish it on another port: the route follows.
                self._routes.set(upstream_of(d, started.host_port))
                await self._store.set_status(d.id, Status.RUNNING, host_port=started.host_port)
            log.info("%s (#%s) restarted", app.name, d.id)

    async def _still_ours(self, app: App) -> bool:
        """The app still exists and is not stopped (an owner's ps:stop, or a destroy in
        progress): read again, since `check` listed the apps before awaiting the engine."""
        fresh = await self._store.find_app(app.name)
        return fresh is not None and not fresh.stopped

    async def _give_up(self, app: App, d: Deployment, reason: str) -> None:
        if not await self._still_ours(app):
            return
        # The route first, with no await since the check: a destroy that starts later
        # removes it again.
        if d.host_port is not None:
            self._routes.set(upstream_of(d, crashed=True))
        log.error("%s (#%s) marked crashed: %s", app.name, d.id, reason)
        await self._store.set_crashed(app.id, reason)
        self._crashes.pop(d.id, None)
        self._notifier.notify(
            "container.crashed", app, deployment_id=d.id, commit=d.commit_sha, reason=reason
        )
