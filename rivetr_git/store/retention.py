"""Pruning old deployments: rows (with their logs and env copies) beyond keep_deployments."""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager

import aiosqlite

from rivetr_git.models import App, Status


class RetentionTables:
    """Mixed into Store, whose connection and transactions it shares."""

    # Provided by Store.
    _db: aiosqlite.Connection
    _transaction: Callable[[], AbstractAsyncContextManager[None]]

    async def prune_deployments(self, app: App, keep: int, kept_images: Collection[str]) -> int:
        """Delete the app's deployments older than its newest `keep`, with their logs and
        env copies (ON DELETE CASCADE); return how many went. Never pruned: the live one,
        in-flight ones, any whose image is in `kept_images` (rollback still runs it), and
        any a remaining deployment names as the release it rolled back to."""
        async with self._transaction():
            async with self._db.execute(
                "SELECT id, status, image, rollback_of FROM deployments WHERE app_id = ? "
                "ORDER BY id DESC",
                (app.id,),
            ) as cur:
                rows = await cur.fetchall()
            doomed = {
                int(row[0])
                for index, row in enumerate(rows)
                if index >= keep
                and not Status(row[1]).in_flight
                and row[1] != Status.RUNNING.value
                and (row[2] is None or row[2] not in kept_images)
            }
            while (
                named := {int(r[3]) for r in rows if r[3] is not None and int(r[0]) not in doomed}
                & doomed
            ):
                doomed -= named  # kept, so what it names is kept too: go round again
            if not doomed:
                return 0
            marks = ", ".join("?" * len(doomed))
            await self._db.execute(f"DELETE FROM deployments WHERE id IN ({marks})", list(doomed))
        return len(doomed)
