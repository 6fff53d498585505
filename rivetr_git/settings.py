"""Server settings, each declared once (name, type, default, help, check) on the Settings class.

Read from defaults < a TOML file < RIVETR_* env vars < explicit overrides. The same
declarations drive `serve --help`, validation and a test that the README lists every setting.
Value checks come from `validate` (one rule per kind of value, shared with app settings and
`rivetr.toml`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from rivetr_git import validate
from rivetr_git.errors import ConfigError

ENV_PREFIX = "RIVETR_"
# What a current OpenSSH offers, less what ssh-audit fails. asyncssh has no sntrup761;
# mlkem768x25519 is the post-quantum hybrid here (OpenSSH 9.9+).
SSH_KEX_ALGS = (
    "mlkem768x25519-sha256,curve25519-sha256,curve25519-sha256@libssh.org,"
    "diffie-hellman-group18-sha512,diffie-hellman-group16-sha512"
)
SSH_CIPHERS = (
    "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,"
    "aes256-ctr,aes192-ctr,aes128-ctr"
)
SSH_MACS = "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com"
T = TypeVar("T")


def setting(default: T, help: str, parse: Callable[[object], T]) -> T:
    """Declare a setting: its default, one line of help, and how a raw value (a TOML value or
    an env var string) becomes a checked value (raising ValueError that says what to give)."""
    return field(default=default, metadata={"help": help, "parse": parse})


# Checks with their settings' bounds ("or off": 0 means off), and short names for the
# common ones so that declarations stay one line.
_seconds = validate.seconds
_count = validate.count
_bool = validate.boolean
_algs = validate.algorithm_list
_size = validate.kept(validate.size)
_port = partial(validate.port, zero_ok=True)
_seconds_or_off = partial(validate.seconds, zero_ok=True)
_count_or_off = partial(validate.count, minimum=0)
_rate_or_off = partial(validate.number, zero_ok=True)
_workers = partial(validate.count, minimum=0, maximum=64)


_runtime = validate.one_of(
    "docker",
    "podman",
    "auto",
    expected="docker, podman or auto (Docker if it answers, else Podman)",
)
_proxy_backend = validate.one_of(
    "builtin", "nginx", expected="'builtin' (rivetr's own proxy) or 'nginx'"
)
_webhook_format = validate.one_of("json", "slack", expected="'json' or 'slack'")
_builder = validate.one_of("nixpacks", "railpack", "pack", expected="nixpacks, railpack or pack")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = setting(
        Path("./data"), "SQLite db, bare repos, host key, logs", validate.directory
    )
    ssh_host: str = setting("0.0.0.0", "address the SSH receiver listens on", validate.host)
    ssh_port: int = setting(2222, "SSH receiver port (0: pick a free one)", _port)
    proxy_host: str = setting("0.0.0.0", "address the reverse proxy listens on", validate.host)
    proxy_port: int = setting(8080, "reverse proxy port (0: pick a free one)", _port)
    public_port: int = setting(0, "port shown in app URLs (0: the proxy's own port)", _port)
    base_domain: str = setting(
        "localhost", "app NAME is served at NAME.<base_domain>", validate.domain
    )
    deploy_branch: str = setting("main", "branch whose pushes deploy", validate.branch)
    max_concurrent_deploys: int = setting(2, "different apps deploy in parallel up to this", _count)
    runtime: str = setting(
        "docker",
        "container runtime: docker, podman, or auto (Docker if it answers, else Podman)",
        _runtime,
    )
    podman_socket: str = setting(
        "",
        "runtime podman: the API socket of a running `podman system service` ('': "
        "start one on data_dir/run/podman.sock)",
        validate.text,
    )
    auto_create_apps: bool = setting(True, "an admin's first push to a new name creates it", _bool)
    health_path: str = setting(
        "",
        "default HTTP health path ('' : the app must answer at all)",
        validate.kept(validate.http_path),
    )
    health_interval: float = setting(0.5, "longest pause between health check attempts", _seconds)
    health_timeout: float = setting(2.0, "seconds one health check attempt may take", _seconds)
    health_retries: int = setting(
        60, "health check attempts before a deploy fails", validate.retries
    )
    health_start_period: float = setting(
        0.0, "seconds after start during which failed health checks do not count", _seconds_or_off
    )
    deploy_command_timeout: float = setting(
        300.0, "seconds an app's pre/post-deploy command may run", _seconds
    )
    stop_timeout: int = setting(10, "seconds a replaced container gets before SIGKILL", _count)
    keep_releases: int = setting(3, "images of this many newest releases are kept per app", _count)
    keep_deployments: int = setting(50, "deployments (and logs) kept per app", _count)
    storage_root: str = setting("", "host dir admins may mount from ('': none)", validate.text)
    log_max_size: str = setting("10m", "app container logs rotate at this size ('': no cap)", _size)
    log_max_files: int = setting(3, "rotated log files kept per app container", _count)
    auto_rollback: bool = setting(
        True,
        "roll back to the previous release when a new one crashes or fails its health"
        " check within watch_window of going live",
        _bool,
    )
    watch_window: float = setting(
        10.0,
        "seconds a new release is watched after the switch; the previous one keeps "
        "running until then",
        _seconds,
    )
    crash_restart_limit: int = setting(
        5,
        "quick crashes in a row after which a live app is marked crashed (503) "
        "instead of restarted",
        _count,
    )
    crash_backoff_max: float = setting(
        300.0,
        "longest wait before restarting a crashed container (the wait starts at 1 s and doubles)",
        _seconds,
    )
    crash_stable_after: float = setting(
        60.0,
        "seconds of running that count as stable and reset the crash counter",
        _seconds,
    )
    drain_timeout: float = setting(
        30.0,
        "seconds in-flight requests to a replaced release may take before it is stopped anyway",
        _seconds,
    )
    build_timeout: int = setting(900, "seconds a build may take before it fails", _count)
    build_cpu_limit: str = setting(
        "", "CPUs a build may use, e.g. 1.5 ('': no limit)", validate.kept(validate.cpus)
    )
    build_memory_limit: str = setting(
        "", "memory a build may use, e.g. 2g or 512m ('': no limit)", validate.kept(validate.memory)
    )
    webhook_url: str = setting(
        "",
        "URL that gets a JSON event for every deploy, rollback and crash ('': none); "
        "apps can add their own",
        validate.kept(validate.http_url),
    )
    webhook_secret: str = setting(
        "",
        "when set, events carry X-Rivetr-Signature: sha256=HMAC-SHA256(secret, body)",
        validate.text,
    )
    webhook_format: str = setting(
        "json",
        "'json' (rivetr's event) or 'slack' (a Slack-compatible {\"text\": ...} payload)",
        _webhook_format,
    )
    buildpack_builder: str = setting(
        "nixpacks",
        "what builds a language project detected by its manifest (package.json, "
        "requirements.txt, go.mod, ...): nixpacks, railpack or pack",
        _builder,
    )
    static_server_image: str = setting(
        "nginx:1.27-alpine",
        "nginx image static sites are served with (official layout: conf.d/*.conf, "
        "/usr/share/nginx/html)",
        validate.image,
    )
    pack_builder: str = setting(
        "paketobuildpacks/builder-jammy-base",
        "builder image `pack build --builder` uses",
        validate.image,
    )
    log_level: str = setting(
        "INFO", "daemon log level: debug, info, warning, error", validate.log_level
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
    ssh_max_startups: int = setting(
        100,
        "SSH connections not yet authenticated, from everyone; more are dropped before "
        "the key exchange",
        _count,
    )
    ssh_max_startups_per_source: int = setting(
        20,
        "SSH connections not yet authenticated from one address; more are dropped before "
        "the key exchange",
        _count,
    )
    ssh_handshake_rate: float = setting(
        5.0,
        "SSH handshakes per second one address may start once its burst is used; faster "
        "ones wait (DHEat guard; 0: no throttling)",
        _rate_or_off,
    )
    ssh_handshake_burst: int = setting(
        10,
        "SSH handshakes one address may start at once before ssh_handshake_rate applies",
        _count,
    )
    ssh_login_grace_time: float = setting(
        30.0,
        "seconds an SSH client has to authenticate before it is disconnected",
        _seconds,
    )
    ssh_max_auth_tries: int = setting(
        10,
        "public keys one SSH connection may offer (probes count; the key that signs "
        "counts twice) before it is disconnected",
        _count,
    )
    ssh_idle_timeout: float = setting(
        300.0,
        "a git session that moves no data for this many seconds (while no deploy "
        "runs) is closed and its git ended (0: never)",
        _seconds_or_off,
    )
    ssh_kex_algs: str = setting(SSH_KEX_ALGS, "SSH key exchanges offered, comma-separated", _algs)
    ssh_ciphers: str = setting(SSH_CIPHERS, "SSH ciphers offered, comma-separated", _algs)
    ssh_macs: str = setting(
        SSH_MACS,
        "SSH MACs offered, comma-separated (AEAD ciphers need none)",
        _algs,
    )
    max_push_size: str = setting(
        "100m",
        "largest pack one push may send, e.g. 100m or 1g (git's receive.maxInputSize; "
        "'' or 0: no limit)",
        validate.kept(validate.size),
    )
    app_networks: str = setting(
        "10.213.0.0/16",
        "private IPv4 range the apps' own networks take a /26 each from ('': "
        "the engine's default pools, about 30 networks)",
        validate.private_ipv4_range,
    )
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

    @property
    def db_path(self) -> Path:
        return self.data_dir / "rivetr.db"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"


@dataclass(frozen=True)
class Setting:
    """One declared setting, as `serve --help`, the loader and the tests see it."""

    name: str
    type: type
    default: Any
    help: str
    parse: Callable[[object], Any]


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, type(f.default), f.default, f.metadata["help"], f.metadata["parse"])
    for f in fields(Settings)
)
_BY_NAME = {s.name: s for s in SETTINGS}


def _convert(setting: Setting, raw: Any, source: str) -> Any:
    """Turn `raw` (a TOML value or an env string) into the setting's checked value."""
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(
            f"setting '{setting.name}' (from {source}): bad value {raw!r}: {exc}"
        ) from None


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
    return replace(settings, data_dir=settings.data_dir.expanduser().resolve())


def settings_help() -> str:
    """One line per setting: name, env var, default, meaning."""
    lines = ["settings (TOML key / env var, default: meaning):"]
    for s in SETTINGS:
        default = str(s.default) if s.default != "" else "''"
        lines.append(f"  {s.name} / {ENV_PREFIX}{s.name.upper()}, default {default}: {s.help}")
    return "\n".join(lines)
