"""What the proxy is told at start-up: limits, timeouts and who may set forwarding headers."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rivetr_git.validate import Network, networks


@dataclass(frozen=True)
class ProxyConfig:
    """Every knob of the data plane; built by the daemon from Settings, or by tests directly."""

    header_timeout: float = 10.0  # seconds to read a request's line and headers
    first_byte_timeout: float = 5.0  # a new connection that sends nothing is closed after this
    max_conns_per_ip: int = 256  # open connections per client address (per worker); 0: no cap
    max_connections: int = 0  # client connections before idle ones are shed; 0: from nofile
    keepalive_timeout: float = 75.0  # idle client keep-alive connections are closed after this
    connect_timeout: float = 5.0  # upstream connect: 502 after this
    read_timeout: float = 60.0  # upstream silent for this long: 504
    upstream_connections: int = 256  # per upstream, so one slow app cannot take every socket
    max_body_size: int = 0  # bytes; 0: no limit
    max_header_size: int = 8190  # one header line, and the request line
    max_headers: int = 100
    websocket_idle_timeout: float = 300.0
    trusted_proxies: tuple[Network, ...] = field(default_factory=tuple)
    access_log: Path | None = None
    access_log_max_bytes: int = 10 * 1024 * 1024
    access_log_backups: int = 5
    tls_dir: Path | None = None  # HTTPS on: certificates published here (proxy/tls/files.py)
    https_port: int = 0  # with tls_dir; 0: pick a free one


def config_to_json(config: ProxyConfig) -> dict[str, Any]:
    """A JSON-able form, for proxy worker processes."""
    data = {f.name: getattr(config, f.name) for f in fields(config)}
    data["trusted_proxies"] = [str(n) for n in config.trusted_proxies]
    data["access_log"] = str(config.access_log) if config.access_log else None
    data["tls_dir"] = str(config.tls_dir) if config.tls_dir else None
    return data


def config_from_json(data: dict[str, Any]) -> ProxyConfig:
    values = dict(data)
    values["trusted_proxies"] = networks(",".join(data["trusted_proxies"]))
    values["access_log"] = Path(data["access_log"]) if data["access_log"] else None
    values["tls_dir"] = Path(data["tls_dir"]) if data.get("tls_dir") else None
    return ProxyConfig(**values)
