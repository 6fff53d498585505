"""Where a throughput run's CPU went: time used by groups of processes over an interval,
read from /proc, so a bench can print CPU per request for the front proxy and for Docker's
userland port relays (`docker-proxy`, one process per published port) beside its req/s.

Only a process's own user + system time is counted (not its reaped children's), so a
group may list a parent and its children without counting anything twice. Processes that
start during the interval are not counted; the groups measured here (proxies, relays of
running containers) exist before it starts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return text.rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def named(command: str) -> list[int]:
    """Processes whose command name (/proc/PID/comm) is `command`."""
    found = []
    for pid in _all_pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == command:
                found.append(pid)
        except OSError:
            continue
    return found


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """`with CpuMeter({"proxy": lambda: [pid]}) as meter: ...`, then `meter.seconds[name]`
    (CPU seconds each group used inside the block) and `meter.busy` (the fraction of all
    CPUs that was busy)."""

    def __init__(self, groups: Mapping[str, Callable[[], Iterable[int]]]) -> None:
        self._groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self._machine = (0, 0)
        self.seconds: dict[str, float] = {}
        self.busy = 0.0

    def _used(self, name: str) -> float:
        total = 0.0
        for pid, start in self._start[name].items():
            now = _cpu_seconds(pid)
            total += max(0.0, now - start)  # a process gone by now counts nothing
        return total

    def __enter__(self) -> CpuMeter:
        self._start = {
            name: {pid: _cpu_seconds(pid) for pid in find()} for name, find in self._groups.items()
        }
        self._machine = _machine_ticks()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        busy, total = _machine_ticks()
        self.busy = (busy - self._machine[0]) / max(1, total - self._machine[1])
        self.seconds = {name: self._used(name) for name in self._groups}
