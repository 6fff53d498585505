"""After a release goes live: one watch per app (pipeline/watch.py does the watching), the
automatic rollback when the release fails in its window, and the rollback's notification.

When the previous container is gone, the rollback is a deployment of the previous
release's image (queued like any other); if that fails too, the app is marked crashed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from rivetr_git.errors import RivetrError
from rivetr_git.models import App, Status
from rivetr_git.notify import Notifier
from rivetr_git.pipeline import app_policy, promote
from rivetr_git.pipeline.after_switch.watch import Switch, after_switch
from rivetr_git.pipeline.queue import Job
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import Runtime
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], None]
# Queue a rollback of `app` to release `id`, requested by `who` (Deployer.rollback).
QueueRollback = Callable[[App, int, str], Awaitable[Job]]


class AutoRollback:
    """Watches each release after its switch and rolls back the ones that fail."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        runtime: Runtime,
        routes: RouteTable,
        notifier: Notifier,
        spawn: Spawn,
        app_url: Callable[[str], str],
        queue_rollback: QueueRollback,
    ) -> None:
        self._settings = settings
        self._store = store
        self._runtime = runtime
        self._routes = routes
        self._notifier = notifier
        self._spawn = spawn
        self._app_url = app_url
        self._queue_rollback = queue_rollback
        self._watches: dict[str, asyncio.Event] = {}
        self._watched: set[int] = set()

    def watch(self, switch: Switch) -> None:
        """Start the post-switch watch; a newer switch of the app ends the older watch."""
        app = switch.new.app_name
        self.end(app)
        superseded = self._watches[app] = asyncio.Event()
        s = self._settings
        self._watched.add(switch.new.id)

        async def watched() -> None:
            try:
                # Per app (deploy:set APP auto_rollback=), else the server setting.
                rollback = app_policy.auto_rollback(s, await self._store.get_app(app))
                await after_switch(
                    self._store,
                    self._routes,
                    self._runtime,
                    switch,
                    window=s.watch_window,
                    auto_rollback=rollback,
                    drain_timeout=s.drain_timeout,
                    stop_timeout=s.stop_timeout,
                    superseded=superseded,
                    on_rollback=self._rolled_back,
                    restart_previous=self._restart_previous,
                )
            finally:
                self._watched.discard(switch.new.id)

        self._spawn(watched())

    def end(self, app_name: str) -> None:
        """End the app's watch window, if one is open (a newer release, or the app is gone)."""
        older = self._watches.pop(app_name, None)
        if older is not None:
            older.set()

    def is_watched(self, deployment_id: int) -> bool:
        """True while a release is inside its post-switch watch window."""
        return deployment_id in self._watched

    async def _restart_previous(self, switch: Switch, reason: str) -> None:
        """The new release failed in its watch window and the previous container is gone:
        run the previous release again from its image, then retire the failed one."""
        previous, new = switch.previous, switch.new
        assert previous is not None
        app = await self._store.get_app(new.app_name)
        await self._store.set_status(
            new.id,
            Status.FAILED,
            error_message=(f"{reason}; rolling back to #{previous.id} from its image"),
        )
        log.warning(
            "%s: deployment #%s failed in its watch window (%s); starting #%s again from its image",
            app.name,
            new.id,
            reason,
            previous.id,
        )
        try:
            job = await self._queue_rollback(app, previous.id, "auto-rollback")
            final = await job.result
            failure = None if final.status is Status.RUNNING else final.error_message
        except RivetrError as exc:
            failure = str(exc)
        if failure is None:
            self._rolled_back(
                Switch(
                    new=new, previous=final, host_header=switch.host_header, policy=switch.policy
                ),
                reason,
            )
            await promote.retire(
                self._runtime,
                self._routes,
                new,
                self._settings.drain_timeout,
                self._settings.stop_timeout,
            )
            return
        # Nothing works: say so (503 and a crashed state that survives restarts) rather than
        # keep routing to the failed release, which would answer 502 with no explanation.
        why = f"{reason}; the rollback to #{previous.id} failed too: {failure}"
        log.error("%s: %s", app.name, why)
        await self._store.set_status(new.id, Status.RUNNING, error_message=why)
        await self._store.set_crashed(app.id, why)
        self._routes.set(promote.upstream_of(new, crashed=True))
        self._notifier.notify(
            "container.crashed", app, deployment_id=new.id, commit=new.commit_sha, reason=why
        )

    def _rolled_back(self, switch: Switch, reason: str) -> None:
        assert switch.previous is not None  # only then is a rollback possible
        self._spawn(self._notify_rollback(switch, reason))

    async def _notify_rollback(self, switch: Switch, reason: str) -> None:
        app = await self._store.get_app(switch.new.app_name)
        back = switch.previous
        assert back is not None
        self._notifier.notify(
            "deploy.rolled_back",
            app,
            deployment_id=back.id,
            commit=back.commit_sha,
            failed_deployment_id=switch.new.id,
            reason=reason,
            url=self._app_url(app.name),
        )
