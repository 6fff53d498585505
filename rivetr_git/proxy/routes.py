"""The route table: an immutable Host -> upstream mapping, replaced in one assignment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Upstream:
    app: str
    host: str
    port: int
    deployment_id: int


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


class RouteTable:
    """Hostnames to upstreams. Readers see either the old or the new table, never a mix."""

    def __init__(self, base_domain: str) -> None:
        self.base_domain = base_domain.lower().rstrip(".")
        self._routes: Mapping[str, Upstream] = MappingProxyType({})

    def hostname(self, app: str) -> str:
        return f"{app}.{self.base_domain}"

    def lookup(self, host_header: str | None) -> Upstream | None:
        return self._routes.get(normalize_host(host_header))

    def snapshot(self) -> Mapping[str, Upstream]:
        return self._routes

    def replace(self, upstreams: list[Upstream]) -> None:
        self._routes = MappingProxyType({self.hostname(u.app): u for u in upstreams})

    def set(self, upstream: Upstream) -> None:
        routes = dict(self._routes)
        routes[self.hostname(upstream.app)] = upstream
        self._routes = MappingProxyType(routes)

    def remove(self, app: str) -> None:
        routes = dict(self._routes)
        routes.pop(self.hostname(app), None)
        self._routes = MappingProxyType(routes)

    def __len__(self) -> int:
        return len(self._routes)
