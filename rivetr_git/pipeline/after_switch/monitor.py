"""The container monitor: a live app's container that exits is restarted, with backoff.

Every process of the live release is watched on its own (web.1, web.2, worker.1, ...).
After `crash_restart_limit` quick crashes in a row of the first web container the app is
marked crashed: the proxy answers 503 for it and a `container.crashed` event goes out,
until the next deploy; any other process is left stopped with the same event (the
proxy stops sending to a web container that does not answer). A run longer than
`crash_stable_after` resets a process's count. A release still inside its post-switch
watch window is left to the watcher, which rolls it back instead. A web container that
stops answering its health check is stopped and restarted by the same rules
(after_switch/live_check.py).

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
from rivetr_git.pipeline.after_switch.live_check import LiveChecks, PolicyOf
from rivetr_git.pipeline.labels import labels
from rivetr_git.pipeline.promote import upstream_of
from rivetr_git.pipeline.scale import process_of, release_labels, web_replicas
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import LABEL_DEPLOYMENT, LABEL_ONEOFF, ContainerInfo, Runtime
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
        self._crashes: dict[str, _Crashes] = {}  # container id -> its crash state
        self._given_up: set[str] = set()  # containers other than web.1 left stopped
        self.restarts: dict[str, int] = {}  # container id -> restarts done (for `ps`)
        self.restarts_by_app: dict[str, int] = {}  # app -> restarts ever done (for /metrics)
        self._reasons: dict[str, str] = {}  # container id -> why it was stopped (unhealthy)
        self._live: LiveChecks | None = None  # see check_live

    def check_live(self, policy_of: PolicyOf) -> None:
        """Also health-check the live web containers, with the app's check in force."""
        self._live = LiveChecks(
            self._settings, self._routes, self._notifier, policy_of, self.unhealthy
        )

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            if self._live is not None:
                self._live.close()

    async def _loop(self) -> None:
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
        probed: set[str] = set()
        for d in live:
            app = apps.get(d.app_id)
            if app is None or app.crashed_reason or app.stopped or not d.container_id:
                continue  # given up on, stopped by its owner, or never started
            if self._is_watched(d.id):
                continue
            await self._check_one(app, d, d.container_id, containers.get(d.container_id))
            if self._live is not None:
                probed |= self._live.check(app, d, containers)
            for c in containers.values():
                if (
                    c.id != d.container_id
                    and c.labels.get(LABEL_DEPLOYMENT) == str(d.id)
                    and not c.labels.get(LABEL_ONEOFF)
                    and c.id not in self._given_up
                ):
                    await self._check_one(app, d, c.id, c)
        for gone in set(self._crashes) - set(containers):
            del self._crashes[gone]
        self._given_up &= set(containers)
        for gone in set(self.restarts) - set(containers):
            del self.restarts[gone]
        for gone in set(self._reasons) - set(containers):
            del self._reasons[gone]
        if self._live is not None:
            self._live.forget(probed)

    async def unhealthy(self, cid: str, reason: str) -> None:
        """A live container that stopped answering: stopped here, then restarted (or given
        up on) by the crash rules below, with `reason` as the crash's reason."""
        self._reasons[cid] = reason
        await self._runtime.stop(cid, self._settings.stop_timeout)

    async def _check_one(
        self, app: App, d: Deployment, cid: str, info: ContainerInfo | None
    ) -> None:
        now = time.monotonic()
        s = self._settings
        state = self._crashes.get(cid)
        if info is not None and info.running:
            if state is not None and now - state.started > s.crash_stable_after:
                del self._crashes[cid]  # a long stable run: forget earlier crashes
            return
        if info is None:
            await self._give_up(app, d, "its container was removed", None)
            return
        process = process_of(info)
        if state is None or state.restart_at is None:  # a new crash
            quick = state is not None and now - state.started < s.crash_stable_after
            count = state.count + 1 if quick and state is not None else 1
            reason = self._reasons.pop(cid, f"container exited with code {info.exit_code}")
            if count > s.crash_restart_limit:
                why = f"{process}: {reason}, {count - 1} restarts did not help"
                await self._give_up(app, d, why, None if cid == d.container_id else cid)
                return
            delay = backoff(count, s.crash_backoff_max)
            log.warning(
                "%s (#%s) %s: %s; restart %d in %gs", app.name, d.id, process, reason, count, delay
            )
            self._crashes[cid] = _Crashes(count=count, started=now, restart_at=now + delay)
            return
        if now >= state.restart_at:
            if not await self._still_ours(app):
                return
            started = await self._runtime.start(info.id)
            state.started, state.restart_at = time.monotonic(), None
            self.restarts[cid] = self.restarts.get(cid, 0) + 1
            self.restarts_by_app[app.name] = self.restarts_by_app.get(app.name, 0) + 1
            if not await self._still_ours(app):
                return  # destroyed or stopped while it started: leave the route alone
            if cid == d.container_id and started.host_port is not None:
                await self._store.set_status(d.id, Status.RUNNING, host_port=started.host_port)
            if started.host_port is not None:
                # Docker may publish it on another port: the route follows.
                fresh = await self._store.get_deployment(d.id)
                others = await web_replicas(self._runtime, release_labels(started))
                if await self._still_ours(app):  # no await between this and the route
                    self._routes.set(upstream_of(fresh, others=others))
            log.info("%s (#%s) %s restarted", app.name, d.id, process)

    async def _still_ours(self, app: App) -> bool:
        """The app still exists and is not stopped (an owner's ps:stop, or a destroy in
        progress): read again, since `check` listed the apps before awaiting the engine."""
        fresh = await self._store.find_app(app.name)
        return fresh is not None and not fresh.stopped

    async def _give_up(self, app: App, d: Deployment, reason: str, cid: str | None) -> None:
        """`cid`: a process other than web.1, left stopped; None: the whole app crashed."""
        if not await self._still_ours(app):
            return
        if cid is None and d.host_port is not None:
            # The route first, with no await since the check: a destroy that starts later
            # removes it again.
            self._routes.set(upstream_of(d, crashed=True))
        self._notifier.notify(
            "container.crashed", app, deployment_id=d.id, commit=d.commit_sha, reason=reason
        )
        if cid is not None:
            log.error("%s (#%s) left stopped: %s", app.name, d.id, reason)
            self._given_up.add(cid)
            self._crashes.pop(cid, None)
            return
        log.error("%s (#%s) marked crashed: %s", app.name, d.id, reason)
        await self._store.set_crashed(app.id, reason)
        if d.container_id:
            self._crashes.pop(d.container_id, None)
