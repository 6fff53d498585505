"""Plain-text tables and sizes for command output."""

from __future__ import annotations

from collections.abc import Sequence

from rivetr_git.terminal import neutralise


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Cells may quote what pushers and apps wrote (commit messages, errors): neutralised."""
    cells = [list(map(str, header))] + [
        [("" if c is None else neutralise(str(c))) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def approx_size(n: int) -> str:
    """1536 -> '1.5 KiB': for sizes measured, not set."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def size(n: int) -> str:
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}b"
