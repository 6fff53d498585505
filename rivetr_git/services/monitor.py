"""The services' crash monitor: a service container that exits is started again, with the
apps' backoff (1, 2, 4, ... s up to crash_backoff_max); after crash_restart_limit quick
crashes in a row it is left stopped (services:info says so) until the server restarts.
A run longer than crash_stable_after forgets earlier crashes."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from rivetr_git.errors import RivetrError
from rivetr_git.runtime.base import Runtime
from rivetr_git.services.manager import Services
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store

log = logging.getLogger(__name__)


@dataclass
class _Crashes:
    count: int
    started: float
    restart_at: float | None = None


class ServiceMonitor:
    def __init__(
        self, settings: Settings, store: Store, runtime: Runtime, services: Services
    ) -> None:
        self._settings = settings
        self._store = store
        self._runtime = runtime
        self._services = services
        self._crashes: dict[str, _Crashes] = {}  # service name -> its crash state
        self.given_up: set[str] = set()
        self.restarts: dict[str, int] = {}  # service name -> restarts done (for info)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.check()
            except RivetrError as exc:
                log.warning("service monitor: %s", exc)

    async def check(self) -> None:
        s = self._settings
        for row in await self._store.list_services():
            name = row.name
            if not row.container_id or name in self._services.busy or name in self.given_up:
                continue
            info = await self._runtime.inspect(row.container_id)
            now = time.monotonic()
            state = self._crashes.get(name)
            if info is not None and info.running:
                if state is not None and now - state.started > s.crash_stable_after:
                    del self._crashes[name]
                continue
            if info is None:
                continue  # removed under us: the next server start makes a new one
            if state is None or state.restart_at is None:
                quick = state is not None and now - state.started < s.crash_stable_after
                count = state.count + 1 if quick and state is not None else 1
                if count > s.crash_restart_limit:
                    log.error("service %s left stopped: %d restarts did not help", name, count - 1)
                    self.given_up.add(name)
                    continue
                delay = float(min(2.0 ** (count - 1), s.crash_backoff_max))
                log.warning(
                    "service %s exited with code %s; restart %d in %gs",
                    name,
                    info.exit_code,
                    count,
                    delay,
                )
                self._crashes[name] = _Crashes(count, now, now + delay)
            elif now >= state.restart_at and name not in self._services.busy:
                await self._runtime.start(info.id)
                state.started, state.restart_at = time.monotonic(), None
                self.restarts[name] = self.restarts.get(name, 0) + 1
                log.info("service %s restarted", name)
