"""The route table: an immutable Host -> upstream mapping, replaced in one assignment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType


@dataclass(frozen=True)
class Upstream:
    app: str
    host: str
    port: int
    deployment_id: int
    crashed: bool = False  # the monitor gave up restarting it: the proxy answers 503
    stopped: bool = False  # its owner stopped it (ps:stop): the proxy answers 503
    # The release's other web containers (`ps:scale web=N`), as (host, port): the proxy
    # spreads requests over all of them. Each backend is counted and drained on its own.
    others: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        # From JSON (proxy workers) the pairs arrive as lists: hashable tuples again.
        pairs: tuple[object, ...] = self.others
        if not isinstance(pairs, tuple) or (pairs and not isinstance(pairs[0], tuple)):
            object.__setattr__(self, "others", tuple((h, int(p)) for h, p in self.others))

    def __hash__(self) -> int:
        # Looked up several times per proxied request (in-flight counts, pools): hash once.
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(
                (
                    self.app,
                    self.host,
                    self.port,
                    self.deployment_id,
                    self.crashed,
                    self.stopped,
                    self.others,
                )
            )
            object.__setattr__(self, "_hash", cached)
        return cached

    def backends(self) -> list[Upstream]:
        """One upstream per web container, without `others`: what requests are counted,
        pooled and drained by."""
        if not self.others:
            return [self]
        cached: list[Upstream] | None = self.__dict__.get("_backends")
        if cached is None:  # asked on every proxied request: built once
            first = replace(self, others=())
            cached = [first, *(replace(first, host=h, port=p) for h, p in self.others)]
            object.__setattr__(self, "_backends", cached)
        return cached


def normalize_host(raw: str | None) -> str:
    """Lower-case a Host header and drop its port and trailing dot ('' if unusable)."""
    if not raw:
        return ""
    host = raw.strip().lower()
    if host.startswith("["):  # IPv6 literal, maybe with a port
        end = host.find("]")
        return host[: end + 1] if end > 0 else ""
    host = host.rsplit(":", 1)[0] if ":" in host else host
    return host.rstrip(".")


class InFlight:
    """Requests in progress per upstream: the proxy counts, the pipeline waits for zero."""

    def __init__(self) -> None:
        self._counts: dict[Upstream, int] = {}
        self._idle: dict[Upstream, asyncio.Event] = {}

    def enter(self, upstream: Upstream) -> None:
        self._counts[upstream] = self._counts.get(upstream, 0) + 1

    def leave(self, upstream: Upstream) -> None:
        left = self._counts[upstream] - 1
        if left:
            self._counts[upstream] = left
            return
        del self._counts[upstream]
        idle = self._idle.pop(upstream, None)
        if idle is not None:
            idle.set()

    def count(self, upstream: Upstream) -> int:
        return self._counts.get(upstream, 0)

    async def wait_idle(self, upstream: Upstream, timeout: float) -> bool:
        """Wait until no request to `upstream` is in flight; False if `timeout` ran out."""
        if not self._counts.get(upstream):
            return True
        idle = self._idle.setdefault(upstream, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await idle.wait()
        except TimeoutError:
            return False
        return True


Listener = Callable[[Mapping[str, Upstream]], None]
DrainWaiter = Callable[[Upstream, float], Awaitable[bool]]


class RouteTable:
    """Hostnames to upstreams. Readers see either the old or the new table, never a mix.

    Proxies in other processes subscribe to every new table, and add a drain waiter that
    answers for the requests they have in flight.
    """

    def __init__(self, base_domain: str) -> None:
        self.base_domain = base_domain.lower().rstrip(".")
        self._routes: Mapping[str, Upstream] = MappingProxyType({})
        self._apps: dict[str, Upstream] = {}
        self._domains: dict[str, str] = {}  # custom hostname -> app
        self.in_flight = InFlight()
        self._listeners: list[Listener] = []
        self._drain_waiters: list[DrainWaiter] = [self.in_flight.wait_idle]
        self._sync_waiters: list[Callable[[float], Awaitable[bool]]] = []

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with each new table, right after the assignment."""
        self._listeners.append(listener)

    def add_drain_waiter(self, waiter: DrainWaiter) -> None:
        self._drain_waiters.append(waiter)

    def add_sync_waiter(self, waiter: Callable[[float], Awaitable[bool]]) -> None:
        self._sync_waiters.append(waiter)

    async def wait_applied(self, timeout: float) -> bool:
        """Wait until every proxy serves the newest table (at once for one in-process)."""
        results = await asyncio.gather(*(w(timeout) for w in self._sync_waiters))
        return all(results)

    async def wait_drained(self, upstream: Upstream, timeout: float) -> bool:
        """Wait until no proxy has a request to `upstream` in flight; False on timeout."""
        results = await asyncio.gather(*(w(upstream, timeout) for w in self._drain_waiters))
        return all(results)

    def _publish(self, routes: dict[str, Upstream]) -> None:
        self._routes = MappingProxyType(routes)
        for listener in self._listeners:
            listener(self._routes)

    def hostname(self, app: str) -> str:
        return f"{app}.{self.base_domain}"

    def lookup(self, host_header: str | None) -> Upstream | None:
        return self._routes.get(normalize_host(host_header))

    def snapshot(self) -> Mapping[str, Upstream]:
        return self._routes

    def _rebuild(self) -> None:
        # Built aside, then swapped in one assignment: an app and its domains move together.
        routes = {self.hostname(app): u for app, u in self._apps.items()}
        for host, app in self._domains.items():
            if app in self._apps:
                routes[host] = self._apps[app]
        self._publish(routes)

    def replace(self, upstreams: list[Upstream], domains: Mapping[str, str] | None = None) -> None:
        """Everything at once: upstreams, and custom hostnames (host -> app) if given."""
        self._apps = {u.app: u for u in upstreams}
        if domains is not None:
            self._domains = {normalize_host(h): app for h, app in domains.items()}
        self._rebuild()

    def set_domains(self, domains: Mapping[str, str]) -> None:
        """Replace every custom hostname (host -> app)."""
        self._domains = {normalize_host(h): app for h, app in domains.items()}
        self._rebuild()

    def set(self, upstream: Upstream) -> None:
        self._apps[upstream.app] = upstream
        self._rebuild()

    def remove(self, app: str) -> None:
        self._apps.pop(app, None)
        self._rebuild()

    def install(self, routes: Mapping[str, Upstream]) -> None:
        """Take a whole table as published by another RouteTable (a proxy worker's copy)."""
        self._apps = {u.app: u for u in routes.values()}
        self._publish(dict(routes))

    def upstream(self, app: str) -> Upstream | None:
        return self._apps.get(app)

    def __len__(self) -> int:
        return len(self._routes)
