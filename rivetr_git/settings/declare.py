"""How a setting is declared: its default, one line of help and its check, kept on the field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from functools import partial
from typing import TypeVar

from rivetr_git import validate

T = TypeVar("T")


def setting(default: T, help: str, parse: Callable[[object], T]) -> T:
    """Declare a setting: its default, one line of help, and how a raw value (a TOML value or
    an env var string) becomes a checked value (raising ValueError that says what to give)."""
    return field(default=default, metadata={"help": help, "parse": parse})


# Checks with their settings' bounds ("or off": 0 means off), and short names for the
# common ones so that declarations stay one line.
_seconds = validate.seconds
_count = validate.count
_bool = validate.boolean
_algs = validate.algorithm_list
_size = validate.kept(validate.size)
_port = partial(validate.port, zero_ok=True)
_seconds_or_off = partial(validate.seconds, zero_ok=True)
_count_or_off = partial(validate.count, minimum=0)
_rate_or_off = partial(validate.number, zero_ok=True)
_workers = partial(validate.count, minimum=0, maximum=64)
