"""The Procfile: process types and their commands, in Heroku's format (`type: command`).

`web` gets the route, the port and the health check; every other type runs from the same
image with its own command, no route and no port; `release` runs once, in a one-off
container, after the build and before anything starts. Commands run through the image's
shell (`sh -c`), as Heroku runs them through bash.

A deployment reads the Procfile of its own commit (restarts and rollbacks included), so a
release always runs the process set it was pushed with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rivetr_git.errors import CheckoutFailed

FILE_NAME = "Procfile"
WEB = "web"
RELEASE = "release"

_TYPE = re.compile(r"^[a-z][a-z0-9_-]*$")
_MAX_TYPES = 32  # more would be a mistake, not a design


@dataclass(frozen=True)
class Procfile:
    """Process type -> command, in the file's order. Empty: no Procfile (one `web` process
    from the image's command)."""

    commands: dict[str, str] = field(default_factory=dict)

    @property
    def web(self) -> str | None:
        """The web process's command; None: the image's own command."""
        return self.commands.get(WEB)

    @property
    def release(self) -> str | None:
        return self.commands.get(RELEASE)

    def background(self) -> dict[str, str]:
        """The types that run beside `web`, without a route: every type but web and release."""
        return {t: c for t, c in self.commands.items() if t not in (WEB, RELEASE)}

    def types(self) -> list[str]:
        """The long-running types: web (always: from the image without a Procfile entry),
        then the others in the file's order."""
        return [WEB, *self.background()]


def shell(command: str) -> list[str]:
    """The argv that runs a Procfile command through the image's shell."""
    return ["sh", "-c", command]


def parse(text: str | None) -> Procfile:
    """Parse a Procfile's text (None: there is none). Raises CheckoutFailed naming the line
    of the first thing wrong, so the push fails at cloning with something to fix."""
    if text is None:
        return Procfile()
    commands: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, command = line.partition(":")
        name, command = name.strip(), command.strip()
        where = f"{FILE_NAME} line {number}"
        if not colon:
            raise CheckoutFailed(
                f"{where}: {_quote(line)} is not `type: command` (e.g. `worker: python worker.py`)"
            )
        if not _TYPE.match(name):
            raise CheckoutFailed(
                f"{where}: process type {_quote(name)} must start with a lower-case letter "
                "and hold only a-z, 0-9, '_' and '-'"
            )
        if not command:
            raise CheckoutFailed(f"{where}: process type {name!r} has no command")
        if name in commands:
            raise CheckoutFailed(f"{where}: process type {name!r} is defined twice")
        commands[name] = command
    if len(commands) > _MAX_TYPES:
        raise CheckoutFailed(f"{FILE_NAME} names {len(commands)} process types; at most 32")
    return Procfile(commands)


def _quote(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
