"""Settings of the server as a whole: where data lives, the runtime, deploys, health checks,
crash restarts, retention and events."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rivetr_git import validate
from rivetr_git.settings.declare import (
    _bool,
    _count,
    _seconds,
    _seconds_or_off,
    _size,
    setting,
)

_runtime = validate.one_of(
    "docker",
    "podman",
    "auto",
    expected="docker, podman or auto (Docker if it answers, else Podman)",
)
_webhook_format = validate.one_of("json", "slack", expected="'json' or 'slack'")


@dataclass(frozen=True)
class CoreSettings:
    data_dir: Path = setting(
        Path("./data"), "SQLite db, bare repos, host key, logs", validate.directory
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
    health_interval: float = setting(
        0.5, "a failed health check attempt counts at most once per interval", _seconds
    )
    health_timeout: float = setting(2.0, "seconds one health check attempt may take", _seconds)
    health_retries: int = setting(
        60, "counted health check failures before a deploy fails", validate.retries
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
    storage_root: str = setting(
        "", "absolute host dir admins may mount from ('': none)", validate.absolute_path
    )
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
    live_check_interval: float = setting(
        30.0,
        "seconds between health checks of every web container of a live release (0: off; "
        "per app: checks:set APP live_interval=)",
        _seconds_or_off,
    )
    live_check_failures: int = setting(
        3,
        "failed live health checks in a row after which a container is restarted like a "
        "crashed one (same backoff and crash_restart_limit)",
        _count,
    )
    drain_timeout: float = setting(
        30.0,
        "seconds in-flight requests to a replaced release may take before it is stopped anyway",
        _seconds,
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
    log_level: str = setting(
        "INFO", "daemon log level: debug, info, warning, error", validate.log_level
    )
    app_networks: str = setting(
        "10.213.0.0/16",
        "private IPv4 range the apps' own networks take a /26 each from ('': "
        "the engine's default pools, about 30 networks)",
        validate.private_ipv4_range,
    )
