"""Per-app settings a user may change (`apps set APP key=value`), validated at the edge."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

from rivetr_git.errors import ValidationError
from rivetr_git.names import validate_branch_name


def _dockerfile(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValidationError(
            f"dockerfile={value!r}: give a path inside the repository, e.g. dockerfile=Dockerfile "
            "or dockerfile=docker/web.Dockerfile"
        )
    return str(path)


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
