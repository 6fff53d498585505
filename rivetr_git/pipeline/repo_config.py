"""`rivetr.toml` committed in an app's repository: settings that travel with the code.

Read from the deployed commit, validated like every other input (a bad file fails the
deploy at the cloning stage with what to fix). Settings made by an admin over SSH win.

    [healthcheck]
    path = "/health"      # must answer 2xx/3xx
    timeout = 5           # seconds one attempt may take
    interval = 1          # a failed attempt counts at most once per interval
    retries = 10          # counted failures before the deploy fails (~10 s here)
    start_period = 0      # seconds during which failures do not count

    [build]
    type = "static"       # skip detection: dockerfile, compose, buildpack, ..., static

    [deploy]              # run with sh -c in the new container, in order; the first
    pre = ["./migrate"]   # failing pre fails the deploy (a single string works too)
    post = ["./warm-cache", "./notify"]   # after the switch; a failure keeps it live

    [[cron]]              # one table per scheduled job (pipeline/cron_jobs.py)
    schedule = "*/5 * * * *"    # five-field cron syntax, UTC
    command = "./cleanup.sh"    # run with sh -c; or a list, run as it is
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rivetr_git import validate
from rivetr_git.errors import CheckoutFailed
from rivetr_git.pipeline.cron_jobs import CronJob, parse_cron_tables

T = TypeVar("T")

FILE_NAME = "rivetr.toml"
_HEALTH_KEYS = {"path", "timeout", "interval", "retries", "start_period"}


@dataclass(frozen=True)
class RepoConfig:
    health_path: str | None = None
    health_timeout: float | None = None
    health_interval: float | None = None
    health_retries: int | None = None
    health_start_period: float | None = None
    build_type: str | None = None  # None (or "auto"): detect from the tree
    cron: tuple[CronJob, ...] = ()  # [[cron]] jobs, in the file's order
    pre_deploy: tuple[str, ...] = ()  # [deploy] pre, in order
    post_deploy: tuple[str, ...] = ()  # [deploy] post


def parse(text: bytes | None) -> RepoConfig:
    """Parse the file's content (None: no file). Raises CheckoutFailed saying what to fix."""
    if text is None:
        return RepoConfig()
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CheckoutFailed(f"{FILE_NAME} is not valid TOML: {exc}") from None
    unknown = set(data) - {"healthcheck", "build", "cron", "deploy"}
    if unknown:
        raise CheckoutFailed(
            f"{FILE_NAME}: unknown table(s) {', '.join(sorted(unknown))}; "
            "this version knows [healthcheck], [build], [deploy] and [[cron]]"
        )
    pre, post = _deploy_commands(data.get("deploy", {}))
    health = data.get("healthcheck", {})
    if not isinstance(health, dict):
        raise CheckoutFailed(f"{FILE_NAME}: healthcheck must be a table, [healthcheck]")
    unknown = set(health) - _HEALTH_KEYS
    if unknown:
        raise CheckoutFailed(
            f"{FILE_NAME}: unknown [healthcheck] key(s) "
            f"{', '.join(sorted(unknown))}; known: "
            f"{', '.join(sorted(_HEALTH_KEYS))}"
        )
    path = health.get("path")
    if path is not None and (
        not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path)
    ):
        raise CheckoutFailed(
            f'{FILE_NAME}: [healthcheck] path = {path!r}: give an HTTP path such as "/health"'
        )
    return RepoConfig(
        cron=parse_cron_tables(data.get("cron", []), FILE_NAME),
        build_type=_build_type(data.get("build", {})),
        pre_deploy=pre,
        post_deploy=post,
        health_path=_value(health, "path", validate.http_path, '"/health"'),
        health_timeout=_value(health, "timeout", validate.seconds, "5"),
        health_interval=_value(health, "interval", validate.seconds, "1"),
        health_retries=_value(health, "retries", validate.retries, "10"),
        health_start_period=_value(
            health, "start_period", lambda v: validate.seconds(v, zero_ok=True), "0"
        ),
    )


def _deploy_commands(table: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """[deploy] pre and post: a command or a list of commands each."""
    if not isinstance(table, dict) or set(table) - {"pre", "post"}:
        raise CheckoutFailed(
            f'{FILE_NAME}: [deploy] takes pre and post, e.g. pre = ["./migrate", "./seed"]'
        )
    found: list[tuple[str, ...]] = []
    for key in ("pre", "post"):
        value = table.get(key, [])
        commands = [value] if isinstance(value, str) else value
        if not isinstance(commands, list) or not all(
            isinstance(c, str) and c.strip() and "\0" not in c and len(c) <= 4096 for c in commands
        ):
            raise CheckoutFailed(
                f"{FILE_NAME}: [deploy] {key} = {value!r}: give a command or a list of "
                f'commands, e.g. {key} = ["./migrate", "./seed"]'
            )
        found.append(tuple(commands))
    return found[0], found[1]


def _build_type(table: object) -> str | None:
    if not isinstance(table, dict) or set(table) - {"type"}:
        raise CheckoutFailed(
            f'{FILE_NAME}: [build] takes one key, type = "static" (or another build type)'
        )
    value = table.get("type")
    if value is None:
        return None
    try:
        checked = validate.build_type(value)
    except ValueError as exc:
        raise CheckoutFailed(f"{FILE_NAME}: [build] type: {exc}") from None
    return checked if checked not in ("", "auto") else None


def _value(table: dict[str, Any], key: str, check: Callable[[object], T], example: str) -> T | None:
    """[healthcheck] `key`, checked by the same rule as the server and app settings."""
    value = table.get(key)
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as exc:
        raise CheckoutFailed(
            f"{FILE_NAME}: [healthcheck] {key} = {value!r}: {exc}; e.g. {key} = {example}"
        ) from None
