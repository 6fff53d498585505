"""Backups of services: consistent dumps (pg_dump -Fc, mariadb-dump --single-transaction,
Redis BGSAVE then its file) in data_dir/backups/NAME/, 0600; restores from them; the same
streams over SSH (export, import); scheduled backups with a keep count.

A dump streams from the service's container through an exec straight into the file (or the
SSH channel), never through a temp copy. A file that does not start like a dump of the
service's kind is refused before the service is touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cronsim import CronSim, CronSimError

from rivetr_git.errors import NotFound, RivetrError, ServiceFailed, ValidationError
from rivetr_git.runtime.base import OnOutput, Runtime
from rivetr_git.services.kinds import KINDS, REDIS_SWAP, Kind
from rivetr_git.services.manager import Services
from rivetr_git.store.database import Store
from rivetr_git.store.services import ServiceRow

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_NAME = re.compile(r"\d{8}T\d{6}\.\d{3}Z\.(dump|rdb|sql)")
_MAGIC_BYTES = 16


@dataclass(frozen=True)
class Backup:
    name: str  # the file's name, what restore takes
    size: int
    path: Path


def cron_schedule(value: str) -> str:
    """A five-field cron expression (UTC), checked by cronsim; ValidationError otherwise."""
    try:
        next(CronSim(value, datetime(2000, 1, 1)))
    except (CronSimError, ValueError, StopIteration):
        raise ValidationError(
            f"{value!r} is not a cron schedule: five fields, minute hour day month weekday "
            "(UTC), e.g. '0 3 * * *' for 03:00 every day"
        ) from None
    return value


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _stamp() -> str:
    t = datetime.now(UTC)
    return t.strftime("%Y%m%dT%H%M%S") + f".{t.microsecond // 1000:03d}Z"


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk


class Backups:
    def __init__(self, store: Store, runtime: Runtime, services: Services, root: Path) -> None:
        self._store = store
        self._runtime = runtime
        self._services = services
        self._root = root  # data_dir/backups

    def directory(self, name: str) -> Path:
        return self._root / name

    async def _running(self, name: str) -> tuple[ServiceRow, str]:
        row = await self._store.get_service(name)
        info = await self._runtime.inspect(row.container_id) if row.container_id else None
        if info is None or not info.running:
            raise ServiceFailed(f"{name} is not running; `services:logs {name}` shows why")
        return row, info.id

    # --- dumps --------------------------------------------------------------------------------

    async def dump(self, name: str, on_output: OnOutput) -> None:
        """Stream a consistent dump of the service. Raises ServiceFailed."""
        row, cid = await self._running(name)
        code, err = await self._runtime.exec_io(cid, KINDS[row.kind].dump(name), on_output)
        if code != 0:
            raise ServiceFailed(
                f"the dump of {name} failed (exit code {code}): "
                f"{err.decode(errors='replace').strip()[-500:]}"
            )

    async def backup(self, name: str) -> Backup:
        """A new backup file (0600, written under a temporary name, then renamed)."""
        row = await self._store.get_service(name)
        directory = self.directory(name)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"{_stamp()}{KINDS[row.kind].suffix}"
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:

                async def write(data: bytes) -> None:
                    f.write(data)

                await self.dump(name, write)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return Backup(path.name, path.stat().st_size, path)

    def of(self, name: str) -> list[Backup]:
        """The service's backups, oldest first."""
        directory = self.directory(name)
        if not directory.is_dir():
            return []
        found = sorted(p for p in directory.iterdir() if _NAME.fullmatch(p.name))
        return [Backup(p.name, p.stat().st_size, p) for p in found]

    def prune(self, name: str, keep: int) -> list[str]:
        """Remove all but the newest `keep` backups; their names."""
        old = self.of(name)[:-keep] if keep > 0 else self.of(name)
        for backup in old:
            backup.path.unlink(missing_ok=True)
        return [b.name for b in old]

    # --- restores -----------------------------------------------------------------------------

    async def restore(self, name: str, backup: str) -> None:
        """Restore one of the service's backups (`latest`: the newest)."""
        await self._store.get_service(name)
        backups = self.of(name)
        if backup == "latest" and backups:
            chosen = backups[-1]
        else:
            found = [b for b in backups if b.name == backup]
            if not found:
                raise NotFound(
                    f"{name} has no backup {backup!r}; `services:backups {name}` lists them"
                )
            chosen = found[0]
        await self.load(name, _file_chunks(chosen.path), chosen.name)

    async def load(self, name: str, chunks: AsyncIterator[bytes], what: str) -> None:
        """Restore from a dump stream; the kind's magic is checked before anything runs."""
        row, cid = await self._running(name)
        kind = KINDS[row.kind]
        head = b""
        async for chunk in chunks:
            head += chunk
            if len(head) >= _MAGIC_BYTES:
                break
        if not any(head.startswith(m) for m in kind.magics):
            raise ValidationError(
                f"{what} is not a {kind.name} dump (such as services:backup or "
                f"services:export {name} writes); {name} was not changed"
            )

        async def stream() -> AsyncIterator[bytes]:
            yield head
            async for chunk in chunks:
                yield chunk

        async with self._services.exclusive(name):
            await self._restore_stream(row, cid, kind, stream())

    async def _restore_stream(
        self, row: ServiceRow, cid: str, kind: Kind, stream: AsyncIterator[bytes]
    ) -> None:
        output = bytearray()

        async def keep(data: bytes) -> None:
            output.extend(data[-2000:])
            del output[:-2000]

        code, err = await self._runtime.exec_io(cid, kind.restore(row.name), keep, stream)
        if code != 0:
            detail = (err or bytes(output)).decode(errors="replace").strip()[-800:]
            raise ServiceFailed(f"restoring {row.name} failed (exit code {code}): {detail}")
        if kind.name == "redis":
            # Redis reads its file at start: swap it in, stop without saving, start.
            await self._runtime.exec(cid, ["sh", "-c", REDIS_SWAP])
            for _ in range(100):
                info = await self._runtime.inspect(cid)
                if info is None or not info.running:
                    break
                await asyncio.sleep(0.1)
            await self._runtime.start(cid)
            await self._services.wait_healthy(row, cid)


async def run_schedule(
    store: Store,
    backups: Backups,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Scheduled backups: every service with a backup_schedule is backed up when it falls
    due, then pruned to its keep count. A failure is logged; the next one still runs."""
    last = clock()
    while True:
        await sleep(20)
        now = clock()
        for row in await store.list_services():
            if not row.backup_schedule:
                continue
            due = next(CronSim(row.backup_schedule, last.replace(second=0, microsecond=0)))
            if last < due <= now:
                try:
                    made = await backups.backup(row.name)
                    backups.prune(row.name, row.backup_keep)
                    log.info("scheduled backup of %s: %s", row.name, made.name)
                except (RivetrError, OSError) as exc:
                    log.error("scheduled backup of %s failed: %s", row.name, exc)
        last = now
