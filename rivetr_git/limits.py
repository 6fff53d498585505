"""Resource limits written by people ('512m', '1.5') turned into what engines take."""

from __future__ import annotations

import math
import re

_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]?b?)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3,
          "gb": 1024**3}


def parse_size(value: str) -> int:
    """'512m', '0.5g', '1GB', '64k', '1048576' -> bytes. Raises ValueError with an example."""
    match = _MEMORY.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a size; use e.g. 64k, 512m, 0.5g or 2gb")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_memory(value: str) -> int:
    """A container memory limit: parse_size, at least Docker's minimum of 6m."""
    size = parse_size(value)
    if size < 6 * 1024**2:
        raise ValueError(f"{value!r} is below Docker's minimum of 6m; use e.g. 512m")
    return size


def parse_cpus(value: str) -> float:
    """'1.5' -> 1.5 CPUs. Raises ValueError with an example."""
    try:
        cpus = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of CPUs; use e.g. 0.5 or 2") from None
    if not math.isfinite(cpus) or cpus <= 0:
        raise ValueError(f"{value!r} must be a positive number of CPUs, e.g. 0.5 or 2")
    return cpus
