"""How an app's settings turn into what a deploy does: health check, command timeout,
limits, build-time env. Per setting, the app's own (admin) value wins, then the repo's
rivetr.toml, then the server's setting."""

from __future__ import annotations

from typing import Any

from rivetr_git.errors import BuildFailed, DecryptionFailed
from rivetr_git.models import App
from rivetr_git.pipeline import health as health_check
from rivetr_git.pipeline.builders import static_site
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.pipeline.repo_config import RepoConfig
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.settings import Settings


def _pick(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def health(
    settings: Settings, app: App, repo: RepoConfig, build_type: str | None = None
) -> health_check.HealthPolicy:
    """A static site's path defaults to the endpoint its generated server always has."""
    s = settings
    default_path = static_site.HEALTH_PATH if build_type == "static" else s.health_path
    return health_check.HealthPolicy(
        path=_pick(app.health_path, repo.health_path, default_path),
        interval=_pick(app.health_interval, repo.health_interval, s.health_interval),
        timeout=_pick(app.health_timeout, repo.health_timeout, s.health_timeout),
        retries=_pick(app.health_retries, repo.health_retries, s.health_retries),
        start_period=_pick(
            app.health_start_period, repo.health_start_period, s.health_start_period
        ),
    )


def health_defaults(s: Settings) -> health_check.HealthPolicy:
    """The server-wide health check, for `apps:info`."""
    return health_check.HealthPolicy(
        path=s.health_path,
        interval=s.health_interval,
        timeout=s.health_timeout,
        retries=s.health_retries,
        start_period=s.health_start_period,
    )


def deploy_commands(app: App, repo: RepoConfig, which: str) -> tuple[str, ...]:
    """The app's pre or post commands: its own (deploy:set) if set, else rivetr.toml's."""
    own = app.pre_commands if which == "pre" else app.post_commands
    if own is not None:
        return own
    return repo.pre_deploy if which == "pre" else repo.post_deploy


def auto_rollback(settings: Settings, app: App) -> bool:
    return settings.auto_rollback if app.auto_rollback is None else app.auto_rollback


def command_timeout(settings: Settings, app: App) -> float:
    if app.deploy_command_timeout is not None:
        return app.deploy_command_timeout
    return settings.deploy_command_timeout


def limits_note(app: App) -> str:
    parts = []
    if app.memory_limit is not None:
        parts.append(f"memory {app.memory_limit // 1024**2} MiB")
    if app.cpu_limit is not None:
        parts.append(f"cpu {app.cpu_limit:g}")
    return f" (limits: {', '.join(parts)})" if parts else ""


async def build_env(
    env_vars: EnvVars, app: App, deployment_id: int, out: DeployLog
) -> dict[str, str]:
    """The env vars the app marked for its builds (`builds:set APP env=A,B`), decrypted
    from the deployment's copy. A name that is not set is reported and skipped."""
    names = app.build_env_names
    if not names:
        return {}
    try:
        env = await env_vars.for_deployment(deployment_id)
    except DecryptionFailed as exc:
        raise BuildFailed(f"{exc}; nothing was built") from None
    missing = [n for n in names if n not in env]
    if missing:
        out.info(
            f"build env {', '.join(missing)} not set (config:set {app.name} "
            "NAME=VALUE); building without"
        )
    return {n: env[n] for n in names if n in env}
