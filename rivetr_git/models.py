"""Plain data shared between modules: apps, deployments, keys and their states."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class Status(enum.StrEnum):
    """Deployment states of the seed, in pipeline order."""

    PENDING = "pending"
    CLONING = "cloning"
    BUILDING = "building"
    STARTING = "starting"
    HEALTH_CHECK = "health_check"
    RUNNING = "running"
    FAILED = "failed"
    REPLACED = "replaced"
    CANCELLED = "cancelled"  # deploys:cancel stopped it before it went live

    @property
    def in_flight(self) -> bool:
        return self in IN_FLIGHT


IN_FLIGHT = frozenset(
    {Status.PENDING, Status.CLONING, Status.BUILDING, Status.STARTING, Status.HEALTH_CHECK}
)


class Role(enum.StrEnum):
    ADMIN = "admin"
    DEVELOPER = "developer"


@dataclass(frozen=True)
class App:
    id: int
    name: str
    created_at: str
    deploy_branch: str | None = None  # None: the server's deploy_branch setting
    dockerfile: str = "Dockerfile"
    port: int | None = None  # None: the image's single EXPOSE, else 5000
    health_path: str | None = None  # None: the server's health_path setting
    webhook_url: str | None = None  # called in addition to the server's webhook_url
    crashed_reason: str | None = None  # set when the monitor gave up restarting it
    memory_limit: int | None = None  # bytes, for every container of the app
    cpu_limit: float | None = None  # CPUs
    # Health check overrides (None: rivetr.toml in the repo, else the server setting).
    health_timeout: float | None = None
    health_interval: float | None = None
    health_retries: int | None = None
    health_start_period: float | None = None
    # JSON lists of commands, each run with `sh -c` in the new container: pre before the
    # health check, post after the switch (None: rivetr.toml's [deploy], else none).
    pre_deploy: str | None = None
    post_deploy: str | None = None
    deploy_command_timeout: float | None = None  # None: the server setting
    stopped: bool = False  # `ps:stop`: no container runs and the proxy answers 503
    build_type: str | None = None  # None: detected from the pushed tree (pipeline/detect.py)
    build_context: str | None = None  # dockerfile builds: the context dir (None: the root)
    build_target: str | None = None  # dockerfile builds: the stage to build (--target)
    build_no_cache: bool = False  # dockerfile builds: ignore the layer cache
    publish_dir: str | None = None  # static builds: the directory served (None: detected)
    compose_service: str | None = None  # compose: the service routed (None: detected)
    build_env: str | None = None  # comma-separated env var names its builds get
    # comma-separated HOST:CONTAINER[:ro] bind mounts its compose file may use (admin only)
    compose_binds: str | None = None
    scale: str | None = None  # `ps:scale` counts, "web=3,worker=2" (a type not named: 1)
    auto_rollback: bool | None = None  # None: the server's auto_rollback setting
    live_check_interval: float | None = None  # None: the server's live_check_interval

    @property
    def pre_commands(self) -> tuple[str, ...] | None:
        """The app's own pre-deploy commands (None: not set, rivetr.toml decides)."""
        return _command_list(self.pre_deploy)

    @property
    def post_commands(self) -> tuple[str, ...] | None:
        return _command_list(self.post_deploy)

    @property
    def compose_bind_list(self) -> list[str]:
        return [b for b in (self.compose_binds or "").split(",") if b]

    @property
    def build_env_names(self) -> list[str]:
        return [n for n in (self.build_env or "").split(",") if n]


def _command_list(stored: str | None) -> tuple[str, ...] | None:
    return None if stored is None else tuple(json.loads(stored))


@dataclass(frozen=True)
class Deployment:
    id: int
    app_id: int
    app_name: str
    status: Status
    commit_sha: str
    commit_message: str
    image: str | None
    container_id: str | None
    host_port: int | None
    error_message: str | None
    created_at: str
    finished_at: str | None
    pushed_by: str | None
    rollback_of: int | None = None  # set when this deployment re-ran an earlier release
    app_port: int | None = None  # the port the app listened on in its container
    kind: str = "push"  # push, rollback or restart (config change, ps:restart)
    post_deploy_error: str | None = None  # the post-deploy command failed (release stays live)
    build_type: str | None = None  # how its image was built (None: before build types)
    cancelled_by: str | None = None  # the key that cancelled it (status cancelled)


@dataclass(frozen=True)
class SshKey:
    id: int
    name: str
    fingerprint: str
    public_key: str
    role: Role
    created_at: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class LogLine:
    at: float
    stage: str
    stream: str
    line: str
