"""The deployment tables of the Store: deployments (a release's state, image, container) and
the log lines each one wrote."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import aiosqlite

from rivetr_git.errors import NotFound, RivetrError
from rivetr_git.models import App, Deployment, LogLine, Status
from rivetr_git.store.schema import columns, from_row, now

# Deployments are selected joined with their app (`d`, `a`): the app's name comes along.
_DEPLOYMENT_COLUMNS = columns(
    Deployment, **{**{f.name: f"d.{f.name}" for f in fields(Deployment)}, "app_name": "a.name"}
)


def _deployment(row: Sequence[Any]) -> Deployment:
    return from_row(Deployment, row, status=Status)


class DeploymentTables:
    """Mixed into Store, whose connection and transactions it shares."""

    # Provided by Store.
    _db: aiosqlite.Connection
    _transaction: Callable[[], AbstractAsyncContextManager[None]]

    if TYPE_CHECKING:  # provided by EnvTables, which needs get_deployment from here

        async def _copy_env(self, app_id: int, deployment_id: int) -> None: ...

    async def create_deployment(
        self,
        app: App,
        commit_sha: str,
        commit_message: str,
        pushed_by: str | None,
        rollback_of: Deployment | None = None,
        kind: str | None = None,
    ) -> Deployment:
        """A pending deployment with a copy of the env it runs with. A rollback or restart
        (`kind`) starts with the image of the release it runs again (`rollback_of`); a
        rollback also gets that release's env, everything else the app's env now."""
        if kind is None:
            kind = "rollback" if rollback_of is not None else "push"
        async with self._transaction():
            cur = await self._db.execute(
                "INSERT INTO deployments (app_id, status, commit_sha, commit_message, pushed_by, "
                "created_at, image, rollback_of, app_port, kind, build_type) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    app.id,
                    Status.PENDING.value,
                    commit_sha,
                    commit_message,
                    pushed_by,
                    now(),
                    rollback_of.image if rollback_of else None,
                    rollback_of.id if rollback_of else None,
                    rollback_of.app_port if rollback_of else None,
                    kind,
                    rollback_of.build_type if rollback_of else None,
                ),
            )
            assert cur.lastrowid is not None  # sqlite always sets it after an INSERT
            if rollback_of is not None and kind == "rollback":
                await self._db.execute(
                    "INSERT INTO deployment_env (deployment_id, name, value) "
                    "SELECT ?, name, value FROM deployment_env WHERE deployment_id = ?",
                    (cur.lastrowid, rollback_of.id),
                )
            else:
                await self._copy_env(app.id, cur.lastrowid)
        return await self.get_deployment(cur.lastrowid)

    async def get_deployment(self, deployment_id: int) -> Deployment:
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            "WHERE d.id = ?",
            (deployment_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no deployment #{deployment_id}")
        return _deployment(row)

    async def list_deployments(self, app: App, limit: int = 50) -> list[Deployment]:
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            "WHERE d.app_id = ? ORDER BY d.id DESC LIMIT ?",
            (app.id, limit),
        ) as cur:
            return [_deployment(r) for r in await cur.fetchall()]

    async def deployments_with_status(self, statuses: Iterable[Status]) -> list[Deployment]:
        wanted = [s.value for s in statuses]
        marks = ", ".join("?" * len(wanted))
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            f"WHERE d.status IN ({marks}) ORDER BY d.id",
            wanted,
        ) as cur:
            return [_deployment(r) for r in await cur.fetchall()]

    async def releases(self, app: App, limit: int = 50) -> list[Deployment]:
        """Deployments of `app` that went live (the live one first if it is the newest)."""
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            "WHERE d.app_id = ? AND d.status IN (?, ?) AND d.image IS NOT NULL "
            "ORDER BY d.id DESC LIMIT ?",
            (app.id, Status.RUNNING.value, Status.REPLACED.value, limit),
        ) as cur:
            return [_deployment(r) for r in await cur.fetchall()]

    async def current_deployment(self, app: App) -> Deployment | None:
        """The deployment that is live for `app`, if any."""
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            "WHERE d.app_id = ? AND d.status = ? ORDER BY d.id DESC LIMIT 1",
            (app.id, Status.RUNNING.value),
        ) as cur:
            row = await cur.fetchone()
        return _deployment(row) if row else None

    async def current_deployments(self) -> dict[int, Deployment]:
        """The live deployment of every app that has one, by app id, in one query (the
        API's app list)."""
        async with self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments d JOIN apps a ON a.id = d.app_id "
            "WHERE d.id IN (SELECT MAX(id) FROM deployments WHERE status = ? GROUP BY app_id)",
            (Status.RUNNING.value,),
        ) as cur:
            return {d.app_id: d for d in map(_deployment, await cur.fetchall())}

    async def set_status(self, deployment_id: int, status: Status, **fields: Any) -> None:
        allowed = {
            "image",
            "container_id",
            "host_port",
            "error_message",
            "app_port",
            "post_deploy_error",
            "build_type",
            "cancelled_by",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise RivetrError(f"unknown deployment fields: {sorted(unknown)}")
        values: dict[str, Any] = {"status": status.value, **fields}
        if not status.in_flight:
            values["finished_at"] = now()
        assignments = ", ".join(f"{k} = ?" for k in values)
        await self._db.execute(
            f"UPDATE deployments SET {assignments} WHERE id = ?", (*values.values(), deployment_id)
        )

    async def promote(self, deployment_id: int, app_id: int) -> None:
        """Mark `deployment_id` running and the app's previous running release replaced."""
        async with self._transaction():
            await self._db.execute(
                "UPDATE deployments SET status = ?, finished_at = COALESCE(finished_at, ?) "
                "WHERE app_id = ? AND status = ? AND id != ?",
                (Status.REPLACED.value, now(), app_id, Status.RUNNING.value, deployment_id),
            )
            await self._db.execute(
                "UPDATE deployments SET status = ?, finished_at = ? WHERE id = ?",
                (Status.RUNNING.value, now(), deployment_id),
            )
            # A new live release starts with a clean slate.
            await self._db.execute(
                "UPDATE apps SET crashed_reason = NULL, stopped = 0 WHERE id = ?", (app_id,)
            )

    async def append_logs(self, deployment_id: int, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        async with self._transaction():
            await self._db.executemany(
                "INSERT INTO deployment_logs (deployment_id, at, stage, stream, line) "
                "VALUES (?, ?, ?, ?, ?)",
                [(deployment_id, ln.at, ln.stage, ln.stream, ln.line) for ln in lines],
            )

    async def get_logs(self, deployment_id: int) -> list[LogLine]:
        await self.get_deployment(deployment_id)
        async with self._db.execute(
            "SELECT at, stage, stream, line FROM deployment_logs WHERE deployment_id = ? "
            "ORDER BY id",
            (deployment_id,),
        ) as cur:
            return [LogLine(*r) for r in await cur.fetchall()]
