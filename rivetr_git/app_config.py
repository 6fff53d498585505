"""Per-app settings a user may change (`apps set APP key=value`), validated at the edge."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

from rivetr_git.errors import ValidationError
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


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """Turn ['port=8000', 'health_path=/health'] into validated column values."""
    if not items:
        raise ValidationError(f"nothing to set; use KEY=VALUE with KEY one of {', '.join(FIELDS)}")
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in FIELDS:
            raise ValidationError(
                f"{item!r}: use KEY=VALUE with KEY one of {', '.join(FIELDS)}"
            )
        values[key] = FIELDS[key](raw)
    return values
