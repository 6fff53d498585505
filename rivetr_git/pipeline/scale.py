"""How many containers of each process type run (`ps:scale`), and what runs (`ps`).

Counts are stored per app (`apps.scale`, e.g. "web=3,worker=2") and kept for later
deploys; a type not named runs one container. A release's first web container is its
recorded one (deployments.container_id/host_port); further web containers (`web.2`, ...)
and every background process are found by their labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from rivetr_git.errors import ValidationError
from rivetr_git.pipeline.labels import LABEL_PROCESS
from rivetr_git.pipeline.procfile import WEB
from rivetr_git.runtime.base import (
    LABEL_APP,
    LABEL_DEPLOYMENT,
    LABEL_INSTANCE,
    LABEL_ONEOFF,
    ContainerInfo,
    Runtime,
)

MAX_PER_TYPE = 20  # a typo (web=300) must not fill the machine
_ASSIGNMENT = re.compile(r"^([a-z][a-z0-9_-]*)=([0-9]{1,3})$")


def parse_counts(stored: str | None) -> dict[str, int]:
    """The stored counts ("web=3,worker=0") as type -> count."""
    counts: dict[str, int] = {}
    for part in (stored or "").split(","):
        kind, _, count = part.partition("=")
        if kind and count.isdigit():
            counts[kind] = int(count)
    return counts


def format_counts(counts: Mapping[str, int]) -> str | None:
    return ",".join(f"{k}={v}" for k, v in sorted(counts.items())) or None


def count_of(counts: Mapping[str, int], kind: str) -> int:
    return counts.get(kind, 1)


def parse_assignments(assignments: list[str], types: list[str], app: str) -> dict[str, int]:
    """`TYPE=N` arguments, checked against the live release's process types. Raises
    ValidationError saying what is wrong and what would do."""
    counts: dict[str, int] = {}
    for raw in assignments:
        match = _ASSIGNMENT.match(raw)
        if match is None:
            raise ValidationError(f"{raw!r} is not TYPE=N (e.g. ps:scale {app} web=3 worker=1)")
        kind, count = match.group(1), int(match.group(2))
        if kind not in types:
            raise ValidationError(
                f"{app} has no process type {kind!r}; its live release runs "
                f"{', '.join(types)} (process types come from the Procfile)"
            )
        if count > MAX_PER_TYPE:
            raise ValidationError(f"{kind}={count}: at most {MAX_PER_TYPE} containers per type")
        if kind == WEB and count == 0:
            raise ValidationError(
                f"web=0 would leave {app} without a web process; ps:stop {app} stops it "
                "(the proxy answers 503 until ps:start)"
            )
        counts[kind] = count
    return counts


def process_of(info: ContainerInfo) -> str:
    """`web.1`, `worker.2`, ...; containers from before process labels are web.1."""
    return info.labels.get(LABEL_PROCESS, f"{WEB}.1")


def _index(process: str) -> int:
    number = process.rpartition(".")[2]
    return int(number) if number.isdigit() else 0


def release_labels(info: ContainerInfo) -> dict[str, str]:
    """The labels every container of `info`'s release carries."""
    keys = (LABEL_INSTANCE, LABEL_APP, LABEL_DEPLOYMENT)
    return {k: info.labels[k] for k in keys if k in info.labels}


async def release_containers(runtime: Runtime, release: Mapping[str, str]) -> list[ContainerInfo]:
    """A release's long-running containers (no one-off runs), by type then index;
    `release`: its labels (pipeline.labels.labels(instance, app, deployment))."""
    if len(release) < 3:  # not a release's full label set: never list more than one release
        return []
    found = [c for c in await runtime.list_containers(release) if not c.labels.get(LABEL_ONEOFF)]
    return sorted(found, key=sort_key)


def sort_key(info: ContainerInfo) -> tuple[str, int]:
    """web.1, web.2, ..., then the other types by name and index."""
    kind, _, _ = process_of(info).partition(".")
    return ("" if kind == WEB else kind, _index(process_of(info)))


async def web_replicas(runtime: Runtime, release: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """The (host, port) of a release's running web containers after the first."""
    return tuple(
        ("127.0.0.1", c.host_port)
        for c in await release_containers(runtime, release)
        if c.running
        and c.host_port
        and process_of(c).startswith(f"{WEB}.")
        and process_of(c) != f"{WEB}.1"
    )


def ps_table(containers: list[ContainerInfo], restarts: Mapping[str, int]) -> list[str]:
    """`ps` lines: process, release, state, uptime, restarts (by the crash monitor)."""
    rows = [("PROCESS", "RELEASE", "STATE", "UPTIME", "RESTARTS")]
    now = datetime.now(UTC)
    for c in containers:
        state = "up" if c.running else f"exited ({c.exit_code})"
        rows.append(
            (
                process_of(c),
                f"#{c.labels.get(LABEL_DEPLOYMENT, '?')}",
                state,
                _uptime(c.started_at, now) if c.running else "-",
                str(restarts.get(c.id, 0)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _uptime(started_at: str | None, now: datetime) -> str:
    if not started_at:
        return "?"
    try:
        # Docker gives nanoseconds; Python takes microseconds.
        stamp = re.sub(r"(\.\d{6})\d+", r"\1", started_at).replace("Z", "+00:00")
        seconds = int((now - datetime.fromisoformat(stamp)).total_seconds())
    except ValueError:
        return "?"
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"
