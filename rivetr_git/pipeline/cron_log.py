"""Where cron runs write: the app's cron log (which `logs APP` shows) and its last runs.

Per app, in `<data_dir>/cron/`: `APP.log`, one line per event or output line, each with
its UTC time and job (`2026-12-02T06:40:00Z cron.1: ...`), rotated to `APP.log.1` past
`max_bytes`; and `APP.json`, the last run of each job (what `cron:list` shows after a
server restart). The lines are short appends to local files, written in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rivetr_git.pipeline.cron_jobs import CronJob

_MAX_LINE = 4096  # an output line longer than this is split


@dataclass(frozen=True)
class LastRun:
    started: datetime
    exit_code: int | None  # None: it could not run (e.g. the release's image is gone)
    ended: datetime


def _key(job: CronJob) -> str:
    # The same job in a later release (same schedule and command) keeps its history.
    return f"{job.name} {job.schedule} {job.shown}"


class CronLog:
    def __init__(
        self, directory: Path, clock: Callable[[], datetime], max_bytes: int = 1 << 20
    ) -> None:
        self._dir = directory
        self._clock = clock
        self._max_bytes = max_bytes
        # Followers of an app's lines (`logs -f`), fed every line as it is written.
        self._followers: dict[str, set[asyncio.Queue[str]]] = {}

    def path(self, app: str) -> Path:
        return self._dir / f"{app}.log"

    def line(self, app: str, job_name: str, text: str) -> None:
        stamp = self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = f"{stamp} {job_name}: {text}"
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self.path(app)
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > self._max_bytes:
                path.replace(path.with_name(path.name + ".1"))
        with path.open("a", encoding="utf-8") as fh:
            fh.write(entry + "\n")
        for queue in self._followers.get(app, ()):
            queue.put_nowait(entry)

    def output(self, app: str, job_name: str) -> Lines:
        """Where a run's output goes: split into lines, each one logged."""
        return Lines(lambda text: self.line(app, job_name, text))

    def tail(self, app: str, count: int) -> list[str]:
        """The app's last `count` lines (the rotated file too, if needed)."""
        lines: list[str] = []
        for path in (self.path(app).with_name(f"{app}.log.1"), self.path(app)):
            with contextlib.suppress(FileNotFoundError):
                lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
        return lines[-count:] if count else []

    @contextlib.contextmanager
    def follow(self, app: str) -> Iterator[asyncio.Queue[str]]:
        """A queue of the app's lines written from now on, while the block runs."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._followers.setdefault(app, set()).add(queue)
        try:
            yield queue
        finally:
            self._followers[app].discard(queue)

    def record(self, app: str, job: CronJob, last: LastRun) -> None:
        runs = self._runs(app)
        runs[_key(job)] = {
            "started": last.started.isoformat(),
            "exit_code": last.exit_code,
            "ended": last.ended.isoformat(),
        }
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = self._dir / f".{app}.json.tmp"
        tmp.write_text(json.dumps(runs, indent=1))
        os.replace(tmp, self._dir / f"{app}.json")

    def last(self, app: str, job: CronJob) -> LastRun | None:
        run = self._runs(app).get(_key(job))
        if not isinstance(run, dict):
            return None
        try:
            code = run.get("exit_code")
            return LastRun(
                started=datetime.fromisoformat(str(run["started"])),
                exit_code=code if isinstance(code, int) else None,
                ended=datetime.fromisoformat(str(run["ended"])),
            )
        except (KeyError, ValueError):
            return None

    def _runs(self, app: str) -> dict[str, object]:
        try:
            data = json.loads((self._dir / f"{app}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def remove(self, app: str) -> None:
        """Forget an app (apps:destroy)."""
        for name in (f"{app}.log", f"{app}.log.1", f"{app}.json"):
            with contextlib.suppress(FileNotFoundError):
                (self._dir / name).unlink()


class Lines:
    """Bytes in, whole lines out (a last partial line at close)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._buffer = b""

    async def feed(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer or len(self._buffer) > _MAX_LINE:
            line, sep, rest = self._buffer.partition(b"\n")
            if not sep:
                line, rest = self._buffer[:_MAX_LINE], self._buffer[_MAX_LINE:]
            self._buffer = rest
            self._emit(line.rstrip(b"\r").decode("utf-8", "replace"))

    def close(self) -> None:
        if self._buffer:
            self._emit(self._buffer.decode("utf-8", "replace"))
            self._buffer = b""
