"""Per-app settings a user may change, validated at the edge.

`apps set APP key=value` (local CLI) and the verbs `limits:set`, `checks:set` and
`deploy:set` each take KEY=VALUE items; an empty value resets a setting to its default.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, TypeVar

from rivetr_git import validate
from rivetr_git.errors import ValidationError

T = TypeVar("T")


def _field(
    key: str, check: Callable[[str], T], example: str, reset: str
) -> Callable[[str], T | None]:
    """An app setting checked by `validate`; '' resets it (None). The error names the key,
    says what to give with an example, and how to reset."""

    def parse(value: str) -> T | None:
        if value == "":
            return None
        try:
            return check(value)
        except ValueError as exc:
            raise ValidationError(
                f"{key}={value!r}: {exc}; e.g. {key}={example} ({key}= {reset})"
            ) from None

    return parse


def _required(parse: Callable[[str], T | None], key: str) -> Callable[[str], T]:
    def check(value: str) -> T:
        found = parse(value)
        if found is None:
            raise ValidationError(f"{key}= needs a value")
        return found

    return check


_dockerfile = _required(
    _field(
        "dockerfile", validate.repo_path, "docker/web.Dockerfile", "is not allowed: give the path"
    ),
    "dockerfile",
)
_context = _field(
    "build_context", validate.repo_path, "services/web", "resets to the repository root"
)
_publish_dir = _field("publish_dir", validate.repo_path, "dist", "detects it again")


def _build_context(value: str) -> str | None:
    path = _context(value)
    return None if path == "." else path


def _build_type(value: str) -> str | None:
    try:
        found = validate.build_type(value)
    except ValueError as exc:
        raise ValidationError(f"build_type={value!r}: {exc}") from None
    return None if found in ("", "auto") else found


def _name(key: str, advice: str, max_len: int) -> Callable[[str], str | None]:
    """A validator for a name (a build stage, a compose service); '' resets it."""

    def check(value: str) -> str | None:
        if value == "":
            return None
        if not re.fullmatch(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{max_len - 1}}}", value):
            raise ValidationError(f"{key}={value!r}: give {advice}")
        return value

    return check


def _no_cache(value: str) -> bool:
    return bool(_field("build_no_cache", validate.boolean, "true", "means false")(value))


_port = _field("port", validate.port, "8000", "resets to the image's EXPOSE, else 5000")
_health_path = _field("health_path", validate.http_path, "/health", "resets to the server default")
_branch = _field(
    "deploy_branch", validate.branch, "production", "resets to the server's deploy_branch"
)
_webhook_url = _field(
    "webhook_url", validate.http_url, "https://hooks.example.com/deploys", "removes it"
)


FIELDS: dict[str, Callable[[str], Any]] = {
    "dockerfile": _dockerfile,
    "port": _port,
    "health_path": _health_path,
    "deploy_branch": _branch,
    "webhook_url": _webhook_url,
    "build_type": _build_type,
    "build_context": _build_context,
    "build_target": _name(
        "build_target",
        "the name of a build stage (FROM ... AS NAME), e.g. build_target=production",
        128,
    ),
    "build_no_cache": _no_cache,
    "publish_dir": _publish_dir,
    "compose_service": _name(
        "compose_service", "the name of a service in the compose file, e.g. compose_service=web", 63
    ),
}

_memory = _field("memory", validate.memory, "512m", "removes the limit")


def _cpus_here(value: str) -> float:
    cpus = validate.cpus(value)
    available = os.cpu_count() or 1
    if cpus < 0.01 or cpus > available:
        raise ValueError(f"this machine has {available} CPUs; give 0.01 to {available}")
    return cpus


_cpu = _field("cpu", _cpus_here, "0.5", "removes the limit")


def _seconds(key: str, example: str, zero_ok: bool = False) -> Callable[[str], float | None]:
    return _field(key, lambda v: validate.seconds(v, zero_ok), example, "resets to the default")


def _command(key: str) -> Callable[[str], list[str]]:
    """One command of a list (`pre=A pre=B`: A then B); '' clears the list."""

    def parse(value: str) -> list[str]:
        if value.strip() == "":
            return []
        if "\0" in value or len(value) > 4096:
            raise ValidationError(f"{key}=...: a command of at most 4096 characters, no NUL")
        return [value]

    return parse


_auto_rollback = _field("auto_rollback", validate.boolean, "false", "follows the server setting")


# KEY -> (app column, parser), per verb.
Fields = Mapping[str, tuple[str, Callable[[str], Any]]]
APPS_SET: Fields = {key: (key, fn) for key, fn in FIELDS.items()}
LIMITS: Fields = {"memory": ("memory_limit", _memory), "cpu": ("cpu_limit", _cpu)}
CHECKS: Fields = {
    "path": ("health_path", _health_path),
    "timeout": ("health_timeout", _seconds("timeout", "5")),
    "interval": ("health_interval", _seconds("interval", "1")),
    "retries": (
        "health_retries",
        _field("retries", validate.retries, "10", "resets to the default"),
    ),
    "start_period": ("health_start_period", _seconds("start_period", "10", zero_ok=True)),
    "live_interval": ("live_check_interval", _seconds("live_interval", "30", zero_ok=True)),
}


def _build_env(value: str) -> str | None:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        return None
    bad = [n for n in names if n == "PORT" or not _is_env_name(n)]
    if bad:
        raise ValidationError(
            f"env={value!r}: give env var names separated by commas, e.g. "
            f"env=NPM_TOKEN,API_URL (not {', '.join(bad)}); env= clears it"
        )
    return ",".join(dict.fromkeys(names))


def _is_env_name(name: str) -> bool:
    try:
        validate.env_name(name)
    except ValueError:
        return False
    return True


BUILDS: Fields = {
    "env": ("build_env", _build_env),
    "type": ("build_type", _build_type),
    "dockerfile": ("dockerfile", _dockerfile),
    "context": ("build_context", _build_context),
    "target": ("build_target", FIELDS["build_target"]),
    "no_cache": ("build_no_cache", _no_cache),
    "publish_dir": ("publish_dir", _publish_dir),
    "compose_service": ("compose_service", FIELDS["compose_service"]),
}


def _binds(value: str) -> str | None:
    """Bind mounts HOST:CONTAINER[:ro], comma-separated: absolute, normalised paths only."""
    entries = [e.strip() for e in value.split(",") if e.strip()]
    for entry in entries:
        host, _, rest = entry.partition(":")
        container, _, mode = rest.partition(":")
        if not all(
            p.startswith("/")
            and p == str(PurePosixPath(p))
            and ".." not in p
            and not any(c.isspace() for c in p)
            for p in (host, container)
        ) or mode not in ("", "ro"):
            raise ValidationError(
                f"binds={value!r}: give HOST:CONTAINER[:ro] pairs of absolute paths separated "
                f"by commas, e.g. binds=/srv/shop-uploads:/uploads (not {entry!r}); binds= "
                "removes them all"
            )
    return ",".join(dict.fromkeys(entries)) or None


COMPOSE_ALLOW: Fields = {"binds": ("compose_binds", _binds)}
DEPLOY_COMMANDS: Fields = {
    "pre": ("pre_deploy", _command("pre")),
    "post": ("post_deploy", _command("post")),
    "timeout": ("deploy_command_timeout", _seconds("timeout", "300")),
    "auto_rollback": ("auto_rollback", _auto_rollback),
    "branch": ("deploy_branch", _branch),
    "port": ("port", _port),
}
# Columns holding a list of commands: a repeated key appends, stored as a JSON array.
_LISTS = frozenset({"pre_deploy", "post_deploy"})


def parse_assignments(items: Sequence[str], fields: Fields = APPS_SET) -> dict[str, Any]:
    """Turn ['port=8000', 'health_path=/health'] into validated column values."""
    keys = ", ".join(fields)
    if not items:
        raise ValidationError(f"nothing to set; use KEY=VALUE with KEY one of {keys}")
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise ValidationError(f"{item!r}: use KEY=VALUE with KEY one of {keys}")
        column, parse = fields[key]
        if column in _LISTS:
            values[column] = [*values.get(column, []), *parse(raw)]
        else:
            values[column] = parse(raw)
    for column in _LISTS & values.keys():
        values[column] = json.dumps(values[column]) if values[column] else None
    return values
