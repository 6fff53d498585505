"""Keep env var values out of the server log: asyncssh logs every exec command at INFO.

`config:set APP NAME=VALUE` (and `run APP CMD...`) carry what must never be logged, so the
logged command keeps only its verb and a first argument that holds no '='.
"""

from __future__ import annotations

import logging

_COMMAND_FORMAT = "  Command: %s"  # asyncssh/channel.py, after its "[conn=N, chan=M] " prefix


class HideCommandArguments(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if (
            isinstance(record.msg, str)
            and record.msg.endswith(_COMMAND_FORMAT)
            and isinstance(record.args, tuple)
            and len(record.args) == 1
        ):
            record.args = (shown_command(str(record.args[0])),)
        return True


def shown_command(command: str) -> str:
    """'config:set web A=secret' -> 'config:set web [arguments hidden]'. Split on
    whitespace, not parsed: a quoted value's pieces are hidden like any other word."""
    words = command.split()
    kept = words[:1] + [w for w in words[1:2] if "=" not in w]
    return " ".join(kept) + (" [arguments hidden]" if len(words) > len(kept) else "")


def hide_command_arguments(logger: logging.Logger | None = None) -> None:
    """Install the filter on asyncssh's logger (once; its channels log through it)."""
    target = logger or logging.getLogger("asyncssh")
    if not any(isinstance(f, HideCommandArguments) for f in target.filters):
        target.addFilter(HideCommandArguments())
