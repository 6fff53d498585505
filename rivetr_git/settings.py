"""Server settings: declared once as data, read from defaults, a TOML file and RIVETR_* env vars.

The same table drives `serve --help`, validation and the README's settings list.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rivetr_git.errors import ConfigError, ValidationError
from rivetr_git.limits import parse_cpus, parse_memory, parse_size
from rivetr_git.names import validate_branch_name
from rivetr_git.proxy.config import parse_networks

ENV_PREFIX = "RIVETR_"


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            raise ValueError(
                "expected an IP address or host name, e.g. 127.0.0.1 or 0.0.0.0"
            ) from None
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("expected a TCP port from 1 to 65535 (0 picks a free port)")
    return value


def _positive_int(value: int) -> int:
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def _positive_float(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a number greater than 0")
    return value


_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _domain(value: str) -> str:
    labels = value.lower().rstrip(".").split(".")
    # ASCII only: browsers send internationalized names as punycode (xn--...).
    if not value or not all(_LABEL.fullmatch(lab) for lab in labels):
        raise ValueError("expected a domain name such as 'localhost' or 'apps.example.com'")
    return ".".join(labels)


def _one_of(*choices: str, expected: str) -> Callable[[str], str]:
    """A check that the value is one of `choices`; `expected` says which, for the error."""
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected {expected}")
        return value
    return check


_runtime = _one_of("docker", "podman", "auto",
                   expected="docker, podman or auto (Docker if it answers, else Podman)")
_proxy_backend = _one_of("builtin", "nginx", expected="'builtin' (rivetr's own proxy) or 'nginx'")
_webhook_format = _one_of("json", "slack", expected="'json' or 'slack'")
_builder = _one_of("nixpacks", "railpack", "pack", expected="nixpacks, railpack or pack")


def _branch(value: str) -> str:
    try:
        return validate_branch_name(value)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def _health_path(value: str) -> str:
    if value and not value.startswith("/"):
        raise ValueError("expected an HTTP path starting with '/', e.g. /health ('': any answer)")
    return value


def _cpu_limit(value: str) -> str:
    if value:
        parse_cpus(value)
    return value


def _memory_limit(value: str) -> str:
    if value:
        parse_memory(value)
    return value


def _size(value: str) -> str:
    if value:
        parse_size(value)
    return value


def _app_networks(value: str) -> str:
    if value:
        try:
            network = ipaddress.IPv4Network(value)
        except ValueError:
            raise ValueError("expected an IPv4 network such as 10.213.0.0/16") from None
        if not network.is_private or network.prefixlen > 26:
            raise ValueError("expected a private IPv4 range of /26 or larger, e.g. "
                             "10.213.0.0/16 (each app takes a /26)")
    return value


def _trusted(value: str) -> str:
    parse_networks(value)
    return value


def _non_negative_float(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a number of at least 0 (0: off)")
    return value


def _workers(value: int) -> int:
    if not 0 <= value <= 64:
        raise ValueError("expected 0 (the proxy runs inside the daemon) to 64 processes")
    return value


def _webhook_url(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL, e.g. https://hooks.example.com/x")
    return value


def _image(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("expected an image reference such as nginx:1.27-alpine")
    return value


def _log_level(value: str) -> str:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected one of debug, info, warning, error")
    return value.upper()


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    check: Callable[[Any], Any] | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", Path, Path("./data"), "SQLite db, bare repos, host key, logs"),
    Setting("ssh_host", str, "0.0.0.0", "address the SSH receiver listens on", _host),
    Setting("ssh_port", int, 2222, "SSH receiver port (0: pick a free one)", _port),
    Setting("proxy_host", str, "0.0.0.0", "address the reverse proxy listens on", _host),
    Setting("proxy_port", int, 8080, "reverse proxy port (0: pick a free one)", _port),
    Setting("public_port", int, 0, "port shown in app URLs (0: the proxy's own port)", _port),
    Setting("base_domain", str, "localhost", "app NAME is served at NAME.<base_domain>", _domain),
    Setting("deploy_branch", str, "main", "branch whose pushes deploy", _branch),
    Setting("max_concurrent_deploys", int, 2, "different apps deploy in parallel up to this",
            _positive_int),
    Setting("runtime", str, "docker", "container runtime: docker, podman, or auto (Docker if "
            "it answers, else Podman)", _runtime),
    Setting("podman_socket", str, "", "runtime podman: the API socket of a running `podman "
            "system service` ('': start one on data_dir/run/podman.sock)"),
    Setting("app_networks", str, "10.213.0.0/16", "private IPv4 range the apps' own networks "
            "take a /26 each from ('': the engine's default pools, about 30 networks)",
            _app_networks),
    Setting("auto_create_apps", bool, True, "an admin key's first push to a new name creates it"),
    Setting("health_path", str, "", "default HTTP health path ('' : the app must answer at all)",
            _health_path),
    Setting("health_interval", float, 0.5, "longest pause between health check attempts",
            _positive_float),
    Setting("health_timeout", float, 2.0, "seconds one health check attempt may take",
            _positive_float),
    Setting("health_retries", int, 60, "health check attempts before a deploy fails",
            _positive_int),
    Setting("health_start_period", float, 0.0, "seconds after start during which failed health "
            "checks do not count", _non_negative_float),
    Setting("deploy_command_timeout", float, 300.0, "seconds an app's pre/post-deploy command "
            "may run", _positive_float),
    Setting("stop_timeout", int, 10, "seconds a replaced container gets to exit before SIGKILL",
            _positive_int),
    Setting("keep_releases", int, 3, "images of this many newest releases are kept per app",
            _positive_int),
    Setting("auto_rollback", bool, True, "roll back to the previous release when a new one "
            "crashes or fails its health check within watch_window of going live"),
    Setting("watch_window", float, 10.0, "seconds a new release is watched after the switch; "
            "the previous one keeps running until then", _positive_float),
    Setting("crash_restart_limit", int, 5, "quick crashes in a row after which a live app is "
            "marked crashed (503) instead of restarted", _positive_int),
    Setting("crash_backoff_max", float, 300.0, "longest wait before restarting a crashed "
            "container (the wait starts at 1 s and doubles)", _positive_float),
    Setting("crash_stable_after", float, 60.0, "seconds of running that count as stable and "
            "reset the crash counter", _positive_float),
    Setting("drain_timeout", float, 30.0, "seconds in-flight requests to a replaced release may "
            "take before it is stopped anyway", _positive_float),
    Setting("build_timeout", int, 900, "seconds a build may take before it is stopped and fails",
            _positive_int),
    Setting("build_cpu_limit", str, "", "CPUs a build may use, e.g. 1.5 ('': no limit)",
            _cpu_limit),
    Setting("build_memory_limit", str, "", "memory a build may use, e.g. 2g or 512m ('': no limit)",
            _memory_limit),
    Setting("webhook_url", str, "", "URL that gets a JSON event for every deploy, rollback and "
            "crash ('': none); apps can add their own", _webhook_url),
    Setting("webhook_secret", str, "", "when set, events carry X-Rivetr-Signature: "
            "sha256=HMAC-SHA256(secret, body)"),
    Setting("webhook_format", str, "json", "'json' (rivetr's event) or 'slack' (a Slack-compatible "
            "{\"text\": ...} payload)", _webhook_format),
    Setting("buildpack_builder", str, "nixpacks", "what builds a language project detected by "
            "its manifest (package.json, requirements.txt, go.mod, ...): nixpacks, railpack or "
            "pack", _builder),
    Setting("static_server_image", str, "nginx:1.27-alpine", "nginx image static sites are "
            "served with (official layout: conf.d/*.conf, /usr/share/nginx/html)", _image),
    Setting("pack_builder", str, "paketobuildpacks/builder-jammy-base", "builder image "
            "`pack build --builder` uses", _image),
    Setting("log_level", str, "INFO", "daemon log level: debug, info, warning, error", _log_level),
    Setting("proxy_backend", str, "builtin", "'builtin' (rivetr's own proxy) or 'nginx' "
            "(the same routes, served by nginx, applied with graceful reloads)", _proxy_backend),
    Setting("proxy_workers", int, 1, "proxy processes sharing proxy_port (SO_REUSEPORT), each "
            "on uvloop; 0: the proxy runs inside the daemon", _workers),
    Setting("trusted_proxies", str, "", "addresses/networks (comma-separated) whose "
            "X-Forwarded-*, X-Real-IP and X-Request-ID are believed ('': nobody's)", _trusted),
    Setting("max_body_size", str, "1g", "largest request body, e.g. 10m or 1g; larger ones get "
            "413, even mid-stream ('' or 0: no limit)", _size),
    Setting("proxy_header_timeout", float, 10.0, "seconds a client has to send a request's "
            "line and headers (slowloris guard; 0: none)", _non_negative_float),
    Setting("proxy_keepalive_timeout", float, 75.0, "idle client keep-alive connections are "
            "closed after this many seconds", _positive_float),
    Setting("proxy_connect_timeout", float, 5.0, "seconds to connect to an app before 502",
            _positive_float),
    Setting("proxy_read_timeout", float, 60.0, "seconds an app may stay silent while "
            "answering before 504", _positive_float),
    Setting("proxy_upstream_connections", int, 256, "most connections to one app at once "
            "(others queue), so one slow app cannot starve the rest", _positive_int),
    Setting("proxy_max_header_size", int, 8190, "longest request line or header line "
            "(bytes); longer: 431 (414 for the request line)", _positive_int),
    Setting("proxy_max_headers", int, 100, "most request headers; more: 431", _positive_int),
    Setting("websocket_idle_timeout", float, 300.0, "a WebSocket with no message either way "
            "for this many seconds is closed", _positive_float),
    Setting("access_log", str, "logs/access.log", "access log file, one JSON line per request "
            "(relative paths are under data_dir; '': off)"),
    Setting("access_log_max_size", str, "10m", "the access log rotates at this size", _size),
    Setting("access_log_backups", int, 5, "rotated access logs kept", _positive_int),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    ssh_host: str = "0.0.0.0"
    ssh_port: int = 2222
    proxy_host: str = "0.0.0.0"
    proxy_port: int = 8080
    public_port: int = 0
    base_domain: str = "localhost"
    deploy_branch: str = "main"
    max_concurrent_deploys: int = 2
    runtime: str = "docker"
    podman_socket: str = ""
    app_networks: str = "10.213.0.0/16"
    auto_create_apps: bool = True
    health_path: str = ""
    health_interval: float = 0.5
    health_timeout: float = 2.0
    health_retries: int = 60
    health_start_period: float = 0.0
    deploy_command_timeout: float = 300.0
    stop_timeout: int = 10
    keep_releases: int = 3
    auto_rollback: bool = True
    watch_window: float = 10.0
    crash_restart_limit: int = 5
    crash_backoff_max: float = 300.0
    crash_stable_after: float = 60.0
    drain_timeout: float = 30.0
    build_timeout: int = 900
    build_cpu_limit: str = ""
    build_memory_limit: str = ""
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_format: str = "json"
    buildpack_builder: str = "nixpacks"
    static_server_image: str = "nginx:1.27-alpine"
    pack_builder: str = "paketobuildpacks/builder-jammy-base"
    log_level: str = "INFO"
    proxy_backend: str = "builtin"
    proxy_workers: int = 1
    trusted_proxies: str = ""
    max_body_size: str = "1g"
    proxy_header_timeout: float = 10.0
    proxy_keepalive_timeout: float = 75.0
    proxy_connect_timeout: float = 5.0
    proxy_read_timeout: float = 60.0
    proxy_upstream_connections: int = 256
    proxy_max_header_size: int = 8190
    proxy_max_headers: int = 100
    websocket_idle_timeout: float = 300.0
    access_log: str = "logs/access.log"
    access_log_max_size: str = "10m"
    access_log_backups: int = 5

    @property
    def db_path(self) -> Path:
        return self.data_dir / "rivetr.db"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"


def _convert(setting: Setting, raw: Any, source: str) -> Any:
    """Cast `raw` (a TOML value or an env string) to the setting's type and check it."""
    where = f"setting '{setting.name}' (from {source})"
    try:
        if setting.type is bool:
            if isinstance(raw, bool):
                value: Any = raw
            elif isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
                value = True
            elif isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError("expected true or false")
        elif setting.type is int:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError("expected a whole number")
            value = int(raw)
        elif setting.type is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError("expected a number")
            value = float(raw)
        elif setting.type is Path:
            if not isinstance(raw, str) or not raw:
                raise ValueError("expected a directory path")
            value = Path(raw)
        else:
            if not isinstance(raw, str):
                raise ValueError("expected a string")
            value = raw
        if setting.check is not None:
            value = setting.check(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: bad value {raw!r}: {exc}") from None
    return value


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from defaults < TOML file < RIVETR_* env < explicit overrides.

    Raises ConfigError naming the setting and what a good value looks like.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        table = data.pop("server", {})
        if not isinstance(table, dict):
            raise ConfigError(
                f"config file {config_file}: 'server' must be a table ([server]), not a value"
            )
        for key, raw in {**data, **table}.items():
            if key in data and key in table:
                raise ConfigError(
                    f"config file {config_file}: '{key}' is set twice, at the top and in "
                    "[server]; keep one"
                )
            setting = _BY_NAME.get(key)
            if setting is None:
                raise ConfigError(
                    f"config file {config_file}: unknown setting '{key}'; "
                    "run `rivetr-git serve --help` for the list"
                )
            values[key] = _convert(setting, raw, str(config_file))
    for setting in SETTINGS:
        var = ENV_PREFIX + setting.name.upper()
        if var in env:
            values[setting.name] = _convert(setting, env[var], var)
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        setting = _BY_NAME[key]
        values[key] = _convert(setting, raw, "command line")
    settings = Settings(**values)
    return _resolve(settings)


def _resolve(settings: Settings) -> Settings:
    """Make data_dir absolute so every component agrees on it."""
    kwargs = {f.name: getattr(settings, f.name) for f in fields(settings)}
    kwargs["data_dir"] = settings.data_dir.expanduser().resolve()
    return Settings(**kwargs)


def settings_help() -> str:
    """One line per setting: name, env var, default, meaning."""
    lines = ["settings (TOML key / env var, default: meaning):"]
    for s in SETTINGS:
        default = str(s.default) if s.default != "" else "''"
        lines.append(f"  {s.name} / {ENV_PREFIX}{s.name.upper()}, default {default}: {s.help}")
    return "\n".join(lines)
