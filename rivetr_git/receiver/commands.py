"""The exec commands an SSH client may run: exactly one git service on one valid app name."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from rivetr_git.admin.verbs import BY_NAME
from rivetr_git.errors import ValidationError
from rivetr_git.names import validate_app_name

GIT_SERVICES = ("git-receive-pack", "git-upload-pack")
_GIT_PROTOCOL = re.compile(r"version=[0-2]")


@dataclass(frozen=True)
class GitCommand:
    service: str  # git-receive-pack or git-upload-pack
    app: str

    @property
    def is_push(self) -> bool:
        return self.service == "git-receive-pack"


@dataclass(frozen=True)
class AdminCommand:
    """One of the admin verbs (`apps:info APP`, `config:set APP K=V`, ...), still as argv:
    the admin service parses it with the verb table, so usage errors read the same
    everywhere."""

    argv: tuple[str, ...]


def parse_command(command: str | None) -> GitCommand | AdminCommand:
    """Parse what OpenSSH sends for a git remote (`git-receive-pack '/app.git'` and friends)
    or an admin verb (`apps:list`, `config:set APP K=V`, `help`, ...).

    Accepted git paths: `app`, `app.git`, `/app`, `/app.git`. Anything else is refused.
    """
    usage = (
        "this server speaks git (add it as a remote, ssh://git@HOST:PORT/APP, and push) and "
        "admin commands (`help` lists them)"
    )
    if not command:
        raise ValidationError(f"no shell here; {usage}")
    try:
        argv = shlex.split(command)
    except ValueError:
        raise ValidationError(f"cannot parse command; {usage}") from None
    if argv and argv[0] in BY_NAME:
        return AdminCommand(argv=tuple(argv))
    if len(argv) != 2 or argv[0] not in GIT_SERVICES:
        raise ValidationError(f"unknown command {argv[0] if argv else command!r}; {usage}")
    path = argv[1]
    name = path.removeprefix("/").removesuffix(".git")
    return GitCommand(service=argv[0], app=validate_app_name(name))


def git_protocol(value: str | None) -> str | None:
    """The client's GIT_PROTOCOL, if it is a plain protocol version; else None (ignored)."""
    if value is not None and _GIT_PROTOCOL.fullmatch(value):
        return value
    return None
