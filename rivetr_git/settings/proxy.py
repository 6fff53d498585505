"""Settings of the reverse proxy: listeners, limits and timeouts, the access log, HTTPS and ACME."""

from __future__ import annotations

from dataclasses import dataclass

from rivetr_git import validate
from rivetr_git.settings.declare import (
    _bool,
    _count,
    _count_or_off,
    _port,
    _seconds,
    _seconds_or_off,
    _size,
    _workers,
    setting,
)

_proxy_backend = validate.one_of(
    "builtin", "nginx", expected="'builtin' (rivetr's own proxy) or 'nginx'"
)


@dataclass(frozen=True)
class ProxySettings:
    proxy_host: str = setting("0.0.0.0", "address the reverse proxy listens on", validate.host)
    proxy_port: int = setting(8080, "reverse proxy port (0: pick a free one)", _port)
    public_port: int = setting(0, "port shown in app URLs (0: the proxy's own port)", _port)
    base_domain: str = setting(
        "localhost", "app NAME is served at NAME.<base_domain>", validate.domain
    )
    proxy_backend: str = setting(
        "builtin",
        "'builtin' (rivetr's own proxy) or 'nginx' (the same routes, served by nginx,"
        " applied with graceful reloads)",
        _proxy_backend,
    )
    proxy_workers: int = setting(
        1,
        "proxy processes sharing proxy_port (SO_REUSEPORT), each on uvloop; 0: the "
        "proxy runs inside the daemon",
        _workers,
    )
    trusted_proxies: str = setting(
        "",
        "addresses/networks (comma-separated) whose X-Forwarded-*, X-Real-IP and "
        "X-Request-ID are believed ('': nobody's)",
        validate.kept(validate.networks),
    )
    max_body_size: str = setting(
        "1g",
        "largest request body, e.g. 10m or 1g; larger ones get 413, even mid-stream "
        "('' or 0: no limit)",
        validate.kept(validate.size),
    )
    proxy_header_timeout: float = setting(
        10.0,
        "seconds a client has to send a request's line and headers (slowloris guard; 0: none)",
        _seconds_or_off,
    )
    proxy_first_byte_timeout: float = setting(
        5.0,
        "seconds a new connection may stay silent before it is closed (shorter than the "
        "header deadline; 0: none)",
        _seconds_or_off,
    )
    proxy_max_conns_per_ip: int = setting(
        256,
        "open proxy connections one client address may hold, per proxy worker (nginx: in "
        "all); more get 429 (0: no cap)",
        _count_or_off,
    )
    proxy_keepalive_timeout: float = setting(
        75.0,
        "idle client keep-alive connections are closed after this many seconds",
        _seconds,
    )
    proxy_connect_timeout: float = setting(5.0, "seconds to connect to an app before 502", _seconds)
    proxy_read_timeout: float = setting(
        60.0, "seconds an app may stay silent while answering before 504", _seconds
    )
    proxy_upstream_connections: int = setting(
        256,
        "most connections to one app at once (others queue), so one slow app cannot "
        "starve the rest",
        _count,
    )
    proxy_max_header_size: int = setting(
        8190,
        "longest request line or header line (bytes); longer: 431 (414 for the request line)",
        _count,
    )
    proxy_max_headers: int = setting(100, "most request headers; more: 431", _count)
    websocket_idle_timeout: float = setting(
        300.0,
        "a WebSocket with no message either way for this many seconds is closed",
        _seconds,
    )
    access_log: str = setting(
        "logs/access.log",
        "access log file, one JSON line per request (relative paths are under data_dir; '': off)",
        validate.text,
    )
    access_log_max_size: str = setting("10m", "the access log rotates at this size", _size)
    access_log_backups: int = setting(5, "rotated access logs kept", _count)
    https_port: int = setting(8443, "HTTPS port of the proxy (0: no HTTPS)", _port)
    https_redirect: bool = setting(
        True,
        "plain HTTP to an app with a valid certificate gets 308 to HTTPS, unless the "
        "app says otherwise (certs:set APP redirect=false)",
        _bool,
    )
    acme_directory: str = setting(
        "https://acme-v02.api.letsencrypt.org/directory",
        "ACME directory certs:auto:enable gets certificates from (HTTP-01)",
        validate.http_url,
    )
    acme_email: str = setting("", "ACME account contact address ('': none)", validate.email)
    acme_ca_bundle: str = setting("", "CA file for ACME ('': the system's)", validate.ca_file)
