"""The route table rendered as an nginx configuration (the optional nginx data plane)."""

from __future__ import annotations

import math
import os
import pwd
from collections.abc import Mapping
from pathlib import Path

from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.fdlimit import nofile_limit
from rivetr_git.proxy.routes import Upstream
from rivetr_git.proxy.tls import nginx_tls
from rivetr_git.proxy.tls.files import read_index

_PAGE = "<!doctype html><title>{s} {t}</title><h1>{t}</h1><p>{d}</p>\\n"
_ERRORS = {
    413: ("Content Too Large", "The request body is larger than this server accepts."),
    429: ("Too Many Requests", "This address has too many connections open; close some and retry."),
    502: ("Bad Gateway", "The app is not answering right now."),
    503: (
        "Service Unavailable",
        "The app keeps crashing and has been stopped; its owner has been told.",
    ),
    -503: ("Service Unavailable", "The app is stopped by its owner."),
    504: ("Gateway Timeout", "The app took too long to answer."),
    404: ("Not Found", "No app is served at this address."),
}


def _page(status: int) -> str:
    """The page for `status`; -503 is the other 503 (stopped rather than crashed)."""
    title, detail = _ERRORS[status]
    return _PAGE.format(s=abs(status), t=title, d=detail)


def _seconds(value: float) -> str:
    return f"{max(1, math.ceil(value * 1000))}ms"


def _error_locations() -> str:
    return "".join(
        f"        location @rivetr_{s} {{ default_type text/html; return {s} '{_page(s)}'; }}\n"
        for s in (413, 429, 502, 504)
    )


def _files() -> tuple[int, int]:
    """worker_rlimit_nofile and worker_connections: as many descriptors as the hard limit
    allows (nginx raises its workers' soft limit to it), capped so the connection table
    nginx allocates up front stays small (about 0.5 KB each)."""
    nofile = min(nofile_limit(hard=True), 65536)
    return nofile, max(1024, nofile - 64)


def _conn_limits(config: ProxyConfig) -> str:
    """The per-address cap (limit_conn counts connections with a request in progress;
    silent ones are cut by client_header_timeout, and nginx itself closes idle ones first
    when it runs out of connections)."""
    if not config.max_conns_per_ip:
        return ""
    return (
        "    limit_conn_zone $binary_remote_addr zone=rivetr_conn:10m;\n"
        f"    limit_conn rivetr_conn {config.max_conns_per_ip};\n"
        "    limit_conn_status 429;\n    limit_conn_log_level warn;\n"
    )


def _header_timeout(config: ProxyConfig) -> float:
    """nginx has one timer from accept to the end of the head: the shorter of the two."""
    timeouts = [t for t in (config.header_timeout, config.first_byte_timeout) if t > 0]
    return min(timeouts) if timeouts else 3600


def _head(config: ProxyConfig, workers: int, state: Path, drain_timeout: float) -> str:
    access = (
        f"    access_log {config.access_log} rivetr;\n"
        if config.access_log
        else "    access_log off;\n"
    )
    header_k = max(1, math.ceil(config.max_header_size / 1024))
    # Workers run as the daemon's own user (nginx would pick 'nobody' for a root master,
    # who cannot write the access log or temp files in the data dir).
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    nofile, connections = _files()
    return f"""\
# Written by rivetr-git from its route table at every change; edits are overwritten.
{user}worker_processes {workers};
daemon off;
pid {state}/nginx.pid;
error_log {state}/error.log warn;
worker_shutdown_timeout {_seconds(drain_timeout)};
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; }}
http {{
    server_tokens off;
    log_format rivetr escape=json '{{"time":$msec,"host":"$host","method":"$request_method",'
        '"path":"$request_uri","status":$status,"bytes":$body_bytes_sent,'
        '"duration_s":$request_time,"upstream":"$upstream_addr"}}';
{access}\
    client_body_temp_path {state}/body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    client_header_timeout {_seconds(_header_timeout(config))};
{_conn_limits(config)}\
    client_body_timeout {_seconds(config.read_timeout)};
    keepalive_timeout {_seconds(config.keepalive_timeout)};
    client_max_body_size {config.max_body_size};
    large_client_header_buffers 4 {header_k}k;
    proxy_http_version 1.1;
    proxy_connect_timeout {_seconds(config.connect_timeout)};
    proxy_read_timeout {_seconds(config.read_timeout)};
    proxy_send_timeout {_seconds(config.read_timeout)};
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_intercept_errors off;
{_forwarding(config)}"""


def _forwarding(config: ProxyConfig) -> str:
    """Which clients' X-Forwarded-*, X-Real-IP and X-Request-ID are believed (trusted_proxies),
    and the Connection header a WebSocket upgrade needs."""
    trusted = "".join(f"        {net} 1;\n" for net in config.trusted_proxies)
    realip = "".join(f"    set_real_ip_from {net};\n" for net in config.trusted_proxies)
    if realip:
        realip += "    real_ip_header X-Forwarded-For;\n    real_ip_recursive on;\n"
    return f"""\
{realip}\
    geo $realip_remote_addr $rivetr_trusted {{
        default 0;
{trusted}\
    }}
    map $rivetr_trusted $rivetr_xff {{
        1 "$http_x_forwarded_for, $realip_remote_addr";
        default $realip_remote_addr;
    }}
    map "$rivetr_trusted:$http_x_forwarded_proto" $rivetr_proto {{
        "~^1:(?<p>.+)$" $p;
        default $scheme;
    }}
    map "$rivetr_trusted:$http_x_forwarded_host" $rivetr_fhost {{
        "~^1:(?<h>.+)$" $h;
        default $http_host;
    }}
    map "$rivetr_trusted:$http_x_request_id" $rivetr_request_id {{
        "~^1:(?<r>.+)$" $r;
        default $request_id;
    }}
    map $http_upgrade $rivetr_connection {{
        default upgrade;
        "" "";
    }}
"""


def _proxy_block(name: str) -> str:
    return f"""\
        location / {{
            proxy_pass http://{name};
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $rivetr_connection;
            proxy_set_header Forwarded "";
            proxy_set_header Expect "";
            proxy_set_header X-Forwarded-For $rivetr_xff;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $rivetr_proto;
            proxy_set_header X-Forwarded-Host $rivetr_fhost;
            proxy_set_header X-Request-ID $rivetr_request_id;
        }}
"""


def upstream_name(upstream: Upstream) -> str:
    return f"rivetr_{upstream.app.replace('-', '_')}_{upstream.deployment_id}"


def upstream_block(upstream: Upstream) -> str:
    backends = upstream.backends()
    # One web container: always tried. Several: one that fails is skipped for 2 s, and
    # a request it refused goes to the next (proxy_next_upstream's default, `error`).
    fails = "max_fails=0" if len(backends) == 1 else "max_fails=1 fail_timeout=2s"
    servers = "".join(f"        server {b.host}:{b.port} {fails};\n" for b in backends)
    balance = "        least_conn;\n" if len(backends) > 1 else ""
    return (
        f"    upstream {upstream_name(upstream)} {{\n{balance}{servers}"
        f"        keepalive 64;\n    }}\n"
    )


def app_server(host: str, upstream: Upstream, listen: str, extra: str = "") -> str:
    """The server block of one hostname (an app's own, or a custom domain of it); `extra`
    adds directives (a certificate, HSTS, the ACME challenge location)."""
    if upstream.crashed or upstream.stopped:
        page = _page(503 if upstream.crashed else -503)
        return (
            f"    server {{\n        listen {listen};\n        server_name {host};\n{extra}"
            f"        default_type text/html;\n"
            f"        location / {{ return 503 '{page}'; }}\n    }}\n"
        )
    name = upstream_name(upstream)
    return (
        f"    server {{\n        listen {listen};\n        server_name {host};\n{extra}"
        f"        error_page 413 @rivetr_413;\n        error_page 429 @rivetr_429;\n"
        f"        error_page 502 @rivetr_502;\n"
        f"        error_page 504 @rivetr_504;\n{_error_locations()}{_proxy_block(name)}"
        f"    }}\n"
    )


def render(
    routes: Mapping[str, Upstream],
    base_domain: str,
    listen: str,
    config: ProxyConfig,
    workers: int,
    state: Path,
    drain_timeout: float,
) -> str:
    """The whole nginx.conf for this table."""
    # One upstream block per release, however many hostnames (custom domains) point at it.
    proxied = {upstream_name(u): u for u in routes.values() if not (u.crashed or u.stopped)}
    apps = "".join(upstream_block(u) for _, u in sorted(proxied.items()))
    challenge = ""
    if config.tls_dir is None:
        apps += "".join(app_server(host, up, listen) for host, up in sorted(routes.items()))
    else:
        apps += _https_servers(routes, listen, config.https_port, config.tls_dir)
        challenge = nginx_tls.challenge_location(config.tls_dir)
    status = f"rivetr-git proxy: {len(routes)} app(s) at *.{base_domain}\\n"
    own = f"""\
    server {{
        listen {listen} default_server reuseport;
        server_name _;
        default_type text/html;
{challenge}\
        location / {{ return 404 '{_page(404)}'; }}
    }}
    server {{
        listen {listen};
        server_name {base_domain};
        default_type text/plain;
        location = /healthz {{ return 200 "ok\\nroutes: {len(routes)}\\n"; }}
        location = / {{ return 200 "{status}"; }}
        location / {{ default_type text/html; return 404 '{_page(404)}'; }}
    }}
"""
    head = _head(config, workers, state, drain_timeout)
    if config.tls_dir is not None:
        head += nginx_tls.tls_head()
    return head + own + apps + "}\n"


def _https_servers(
    routes: Mapping[str, Upstream], listen: str, https_port: int, tls_dir: Path
) -> str:
    """Plain-HTTP servers (redirecting where a certificate allows), HTTPS servers for the
    hosts with a certificate, and the HTTPS fallback (proxy/tls/nginx_tls.py)."""
    policies = read_index(tls_dir)
    challenge = nginx_tls.challenge_location(tls_dir)
    listen_https = f"{listen.rsplit(':', 1)[0]}:{https_port}"
    out = []
    for host in sorted(set(routes) | set(policies)):
        up, policy = routes.get(host), policies.get(host)
        if policy is not None and policy.redirect:
            out.append(nginx_tls.redirect_server(host, listen, https_port, tls_dir))
        elif up is not None:
            out.append(app_server(host, up, listen, challenge))
        if policy is None:
            continue
        extra = nginx_tls.https_extra(tls_dir, policy)
        out.append(
            app_server(host, up, f"{listen_https} ssl", extra)
            if up is not None
            else nginx_tls.no_app_server(host, listen_https, extra, _page(404))
        )
    out.append(nginx_tls.fallback_server(listen_https, tls_dir, _page(404)))
    return "".join(out)
