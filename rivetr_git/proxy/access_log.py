"""The access log: one JSON line per request, batched on the event loop, rotated by size.

Lines are collected in memory and appended a few times a second in one write each: no
thread (which would contend for the GIL with the event loop) and no syscall per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from json.encoder import encode_basestring as _quote  # the C string encoder of json
from pathlib import Path

_FLUSH_EVERY = 0.2  # seconds
log = logging.getLogger(__name__)


class AccessLog:
    """Appends to `path`; at `max_bytes` it becomes path.1 (path.1 becomes path.2, ...)."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._max_bytes = max_bytes
        self._backups = backups
        self._lines: list[bytes] = []
        self._flush_at: asyncio.TimerHandle | None = None
        self._size = path.stat().st_size if path.exists() else 0

    def record(
        self,
        host: str,
        method: str,
        path: str,
        status: int,
        sent: int,
        started: float,
        upstream: str,
    ) -> None:
        duration = (time.monotonic() - started) * 1000
        self._lines.append(
            f'{{"time":{time.time():.3f},"host":{_quote(host)},"method":{_quote(method)},'
            f'"path":{_quote(path)},"status":{status},"bytes":{sent},'
            f'"duration_ms":{duration:.2f},"upstream":{_quote(upstream)}}}\n'.encode()
        )
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(_FLUSH_EVERY, self.flush)

    def flush(self) -> None:
        self._flush_at = None
        lines, self._lines = self._lines, []
        try:
            self._append(lines)
        except OSError as exc:
            # A full disk must not take the proxy down: the lines are dropped, and said so.
            log.warning("access log %s: %d line(s) lost: %s", self._path, len(lines), exc.strerror)

    def _append(self, lines: list[bytes]) -> None:
        batch: list[bytes] = []
        batch_size = 0
        for line in lines:
            if self._size + batch_size + len(line) > self._max_bytes and self._size + batch_size:
                self._write(batch)
                self._rotate()
                batch, batch_size = [], 0
            batch.append(line)
            batch_size += len(line)
        self._write(batch)

    def _write(self, batch: list[bytes]) -> None:
        if not batch:
            return
        data = b"".join(batch)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self._size += len(data)

    def _rotate(self) -> None:
        for n in range(self._backups - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{n}")
            if older.exists():
                older.replace(self._path.with_name(f"{self._path.name}.{n + 1}"))
        with contextlib.suppress(FileNotFoundError):
            self._path.replace(self._path.with_name(f"{self._path.name}.1"))
        self._size = 0

    def close(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
        self.flush()
