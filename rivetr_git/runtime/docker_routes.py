"""The host's own IPv4 routes (the engine is local), so that app networks avoid them."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path


def host_routes(table: Path) -> list[ipaddress.IPv4Network]:
    """The destinations of a /proc/net/route table (addresses in little-endian hex)."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "00000000":
            continue  # the default route is not a network of ours to avoid
        with contextlib.suppress(ValueError):
            dest, mask = (
                ipaddress.IPv4Address(int(f, 16).to_bytes(4, "little"))
                for f in (fields[1], fields[7])
            )
            found.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    return found
