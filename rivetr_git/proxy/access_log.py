"""The access log: one JSON line per request, written off the event loop, rotated by size."""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import time
from pathlib import Path


class AccessLog:
    """Appends to `path` from a background thread; the request path only enqueues a string."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler = handler
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._listener.start()

    def record(
        self, host: str, method: str, path: str, status: int, sent: int, started: float,
        upstream: str,
    ) -> None:
        line = json.dumps({
            "time": round(time.time(), 3), "host": host, "method": method, "path": path,
            "status": status, "bytes": sent,
            "duration_ms": round((time.monotonic() - started) * 1000, 2), "upstream": upstream,
        }, separators=(",", ":"))
        # A bare LogRecord: no logger lookup, no formatting work on the event loop.
        self._queue.put(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))

    def close(self) -> None:
        self._listener.stop()
        self._handler.close()
