"""The one security boundary for names that become paths, hostnames and labels."""

from __future__ import annotations

import ipaddress
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


def validate_domain(raw: str, base_domain: str) -> str:
    """Return the custom domain `raw` lower-cased, or raise ValidationError.

    A custom domain claims every request whose Host header names it, so only real
    hostnames qualify: no IP literal (v4, v6, bracketed, or what browsers read as IPv4,
    e.g. `127.1` or `0x7f.0.0.1`: a last label that is a number), no `localhost` or name
    under it (they always mean the machine itself, RFC 6761), nothing under the server's
    base domain (app names are served there already).
    """
    host = raw.strip().lower().rstrip(".")
    if is_address(host):
        raise ValidationError(
            f"{raw!r} is an IP address, not a domain name: an app cannot claim requests sent "
            "to an address; give a hostname that points at this server, e.g. www.example.com"
        )
    if is_localhost(host):
        raise ValidationError(
            f"{raw!r} is a localhost name, which always means the client's own machine; "
            "give a hostname that points at this server, e.g. www.example.com"
        )
    labels = host.split(".")
    ok = (
        len(labels) > 1
        and len(host) <= 253
        and all(
            0 < len(label) <= 63
            and label.replace("-", "").isalnum()
            and label.isascii()
            and not label.startswith("-")
            and not label.endswith("-")
            for label in labels
        )
    )
    if not ok or host != raw.lower().rstrip("."):
        raise ValidationError(
            f"{raw!r} is not a hostname; give one like www.example.com (no scheme, port or path)"
        )
    if host == base_domain or host.endswith("." + base_domain):
        raise ValidationError(
            f"{host} is under the server's base domain "
            f"({base_domain}), where app names are served already"
        )
    return host


def is_localhost(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def is_address(host: str) -> bool:
    """Whether `host` is an IP literal, or what browsers would read as an IPv4 address."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(literal)
        return True
    except ValueError:
        pass
    # What URL parsers (and so browsers) take for IPv4: the last label is a number.
    last = host.rsplit(".", 1)[-1]
    return last.isdigit() or (last[:2] == "0x" and all(c in "0123456789abcdef" for c in last[2:]))
