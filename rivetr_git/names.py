"""The one security boundary for names that become paths, hostnames and labels."""

from __future__ import annotations

import re

from rivetr_git.errors import ValidationError

_APP_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


def validate_app_name(name: str) -> str:
    """Return `name` if it is a valid app name, else raise ValidationError.

    App names become DNS labels, directory names and container labels, so they are
    rejected, never repaired: a leading dash would be option injection, dots or
    slashes path traversal, capitals a second spelling of the same host.
    """
    if not isinstance(name, str) or not _APP_NAME.fullmatch(name) or name.endswith("-"):
        raise ValidationError(
            f"invalid app name {name!r}: use 1-63 lower-case letters, digits and dashes, "
            "starting with a letter and not ending with a dash (e.g. 'hello' or 'my-api')"
        )
    return name


def validate_key_name(name: str) -> str:
    """Return `name` if it is a valid SSH key name, else raise ValidationError."""
    if not _KEY_NAME.fullmatch(name):
        raise ValidationError(
            f"invalid key name {name!r}: use up to 64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit (e.g. 'alice' or 'ci-bot')"
        )
    return name


def validate_branch_name(name: str) -> str:
    """Return `name` if it is a plausible branch name for the deploy branch setting."""
    if not _BRANCH.fullmatch(name) or ".." in name or name.endswith((".lock", "/", ".")):
        raise ValidationError(
            f"invalid branch name {name!r}: use a plain branch name such as 'main' or 'production'"
        )
    return name
