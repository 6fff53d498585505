"""Per-app settings a user may change, validated at the edge.

`apps set APP key=value` (local CLI) and the verbs `limits:set`, `checks:set` and
`deploy:set` each take KEY=VALUE items; an empty value resets a setting to its default.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from rivetr_git.errors import ValidationError
from rivetr_git.limits import parse_cpus, parse_memory
from rivetr_git.names import validate_branch_name
from rivetr_git.pipeline.detect import validate_build_type


def _repo_path(key: str, value: str, example: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValidationError(
            f"{key}={value!r}: give a path inside the repository, e.g. {example}"
        )
    return str(path)


def _dockerfile(value: str) -> str:
    return _repo_path("dockerfile", value or "", "dockerfile=Dockerfile or "
                      "dockerfile=docker/web.Dockerfile")


def _build_type(value: str) -> str | None:
    return None if validate_build_type(value) in ("", "auto") else value


def _build_context(value: str) -> str | None:
    if value == "":
        return None
    path = _repo_path("build_context", value, "build_context=services/web (build_context= "
                      "resets to the repository root)")
    return None if path == "." else path


def _publish_dir(value: str) -> str | None:
    return None if value == "" else _repo_path(
        "publish_dir", value, "publish_dir=dist (publish_dir= detects it again)")


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
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("", "0", "false", "no", "off"):
        return False
    raise ValidationError(f"build_no_cache={value!r}: give true or false")


def _port(value: str) -> int | None:
    if value == "":
        return None
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValidationError(
            f"port={value!r}: give the port the app listens on, 1-65535, e.g. port=8000 "
            "(port= resets to the image's EXPOSE, else 5000)"
        )
    return int(value)


def _health_path(value: str) -> str | None:
    if value == "":
        return None
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValidationError(
            f"health_path={value!r}: give an HTTP path such as health_path=/health "
            "(health_path= resets to the server default)"
        )
    return value


def _branch(value: str) -> str | None:
    return None if value == "" else validate_branch_name(value)


def _webhook_url(value: str) -> str | None:
    if value == "":
        return None
    if not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
        raise ValidationError(
            f"webhook_url={value!r}: give an http(s) URL, e.g. "
            "webhook_url=https://hooks.example.com/deploys (webhook_url= removes it)"
        )
    return value


FIELDS: dict[str, Callable[[str], Any]] = {
    "dockerfile": _dockerfile,
    "port": _port,
    "health_path": _health_path,
    "deploy_branch": _branch,
    "webhook_url": _webhook_url,
    "build_type": _build_type,
    "build_context": _build_context,
    "build_target": _name("build_target", "the name of a build stage (FROM ... AS NAME), "
                          "e.g. build_target=production", 128),
    "build_no_cache": _no_cache,
    "publish_dir": _publish_dir,
    "compose_service": _name("compose_service", "the name of a service in the compose file, "
                             "e.g. compose_service=web", 63),
}


def _memory(value: str) -> int | None:
    if value == "":
        return None
    try:
        return parse_memory(value)
    except ValueError as exc:
        raise ValidationError(f"memory={value!r}: {exc} (memory= removes the limit)") from None


def _cpu(value: str) -> float | None:
    if value == "":
        return None
    try:
        cpus = parse_cpus(value)
    except ValueError as exc:
        raise ValidationError(f"cpu={value!r}: {exc} (cpu= removes the limit)") from None
    available = os.cpu_count() or 1
    if cpus < 0.01 or cpus > available:
        raise ValidationError(f"cpu={value!r}: this machine has {available} CPUs; give 0.01 "
                              f"to {available}, e.g. cpu=0.5")
    return cpus


def _seconds(key: str, example: str, zero_ok: bool = False) -> Callable[[str], float | None]:
    def parse(value: str) -> float | None:
        if value == "":
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok) \
                or number > 86400:
            raise ValidationError(f"{key}={value!r}: give seconds, e.g. {key}={example} "
                                  f"({key}= resets to the default)")
        return number
    return parse


def _retries(value: str) -> int | None:
    if value == "":
        return None
    if not value.isdigit() or not 1 <= int(value) <= 10000:
        raise ValidationError(f"retries={value!r}: give a count from 1 to 10000, e.g. "
                              "retries=10 (retries= resets to the default)")
    return int(value)


def _command(key: str) -> Callable[[str], str | None]:
    def parse(value: str) -> str | None:
        if value.strip() == "":
            return None
        if "\0" in value or len(value) > 4096:
            raise ValidationError(f"{key}=...: a command of at most 4096 characters, no NUL")
        return value
    return parse


# KEY -> (app column, parser), per verb.
Fields = Mapping[str, tuple[str, Callable[[str], Any]]]
APPS_SET: Fields = {key: (key, fn) for key, fn in FIELDS.items()}
LIMITS: Fields = {"memory": ("memory_limit", _memory), "cpu": ("cpu_limit", _cpu)}
CHECKS: Fields = {
    "path": ("health_path", _health_path),
    "timeout": ("health_timeout", _seconds("timeout", "5")),
    "interval": ("health_interval", _seconds("interval", "1")),
    "retries": ("health_retries", _retries),
    "start_period": ("health_start_period", _seconds("start_period", "10", zero_ok=True)),
}
def _build_env(value: str) -> str | None:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        return None
    bad = [n for n in names if not _ENV_NAME.fullmatch(n) or n == "PORT"]
    if bad:
        raise ValidationError(f"env={value!r}: give env var names separated by commas, e.g. "
                              f"env=NPM_TOKEN,API_URL (not {', '.join(bad)}); env= clears it")
    return ",".join(dict.fromkeys(names))


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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
        if not all(p.startswith("/") and p == str(PurePosixPath(p)) and ".." not in p
                   and not any(c.isspace() for c in p) for p in (host, container)) \
                or mode not in ("", "ro"):
            raise ValidationError(
                f"binds={value!r}: give HOST:CONTAINER[:ro] pairs of absolute paths separated "
                f"by commas, e.g. binds=/srv/shop-uploads:/uploads (not {entry!r}); binds= "
                "removes them all")
    return ",".join(dict.fromkeys(entries)) or None


COMPOSE_ALLOW: Fields = {"binds": ("compose_binds", _binds)}
DEPLOY_COMMANDS: Fields = {
    "pre": ("pre_deploy", _command("pre")),
    "post": ("post_deploy", _command("post")),
    "timeout": ("deploy_command_timeout", _seconds("timeout", "300")),
}


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
        values[column] = parse(raw)
    return values
