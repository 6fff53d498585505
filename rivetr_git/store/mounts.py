"""The storage table of the Store: what each app mounts where (storage:mount)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiosqlite

from rivetr_git.errors import NotFound, ValidationError
from rivetr_git.models import App


@dataclass(frozen=True)
class AppMount:
    target: str  # absolute path in the container
    source: str  # the app volume's short name, or an absolute host directory
    bind: bool  # True: a host directory


class MountTables:
    """Mixed into Store, whose connection and transactions it shares."""

    # Provided by Store.
    _db: aiosqlite.Connection
    _transaction: Callable[[], AbstractAsyncContextManager[None]]

    async def mounts(self, app: App) -> list[AppMount]:
        """The app's mounts, by container path."""
        async with self._db.execute(
            "SELECT target, source, bind FROM app_mounts WHERE app_id = ? ORDER BY target",
            (app.id,),
        ) as cur:
            return [AppMount(r[0], r[1], bool(r[2])) for r in await cur.fetchall()]

    async def add_mount(self, app: App, mount: AppMount) -> None:
        """Record a mount; a path that already has one is refused (unmount it first)."""
        async with self._transaction():
            async with self._db.execute(
                "SELECT source FROM app_mounts WHERE app_id = ? AND target = ?",
                (app.id, mount.target),
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                raise ValidationError(
                    f"{mount.target} of {app.name} already has {row[0]} mounted; "
                    f"storage:unmount {app.name} {mount.target} first"
                )
            await self._db.execute(
                "INSERT INTO app_mounts (app_id, target, source, bind) VALUES (?, ?, ?, ?)",
                (app.id, mount.target, mount.source, int(mount.bind)),
            )

    async def remove_mount(self, app: App, target: str) -> AppMount:
        """Forget the mount at `target` and return it; NotFound if there is none."""
        async with (
            self._transaction(),
            self._db.execute(
                "DELETE FROM app_mounts WHERE app_id = ? AND target = ? "
                "RETURNING target, source, bind",
                (app.id, target),
            ) as cur,
        ):
            row = await cur.fetchone()
        if row is None:
            raise NotFound(
                f"nothing is mounted at {target} in {app.name}; storage:list {app.name} "
                "shows what is"
            )
        return AppMount(row[0], row[1], bool(row[2]))
