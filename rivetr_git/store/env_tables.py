"""The env var tables of the Store: ciphertext in, ciphertext out (env_vars.py decrypts).

`env_vars` holds each app's current values; `deployment_env` the copy a deployment runs
with. Both go with their app (ON DELETE CASCADE, through deployments for the copies).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import ClassVar

import aiosqlite

from rivetr_git.errors import NotFound
from rivetr_git.models import App, Deployment


class EnvTables:
    """Mixed into Store, whose connection and transactions it shares."""

    # Provided by Store.
    _db: aiosqlite.Connection
    _transaction: Callable[[], AbstractAsyncContextManager[None]]
    get_deployment: Callable[[int], Awaitable[Deployment]]

    async def _copy_env(self, app_id: int, deployment_id: int) -> None:
        await self._db.execute(
            "DELETE FROM deployment_env WHERE deployment_id = ?", (deployment_id,)
        )
        await self._db.execute(
            "INSERT INTO deployment_env (deployment_id, name, value) "
            "SELECT ?, name, value FROM env_vars WHERE app_id = ?",
            (deployment_id, app_id),
        )

    async def env_values(self, app: App) -> list[tuple[str, bytes]]:
        """(name, blob) of the app's env vars, by name."""
        async with self._db.execute(
            "SELECT name, value FROM env_vars WHERE app_id = ? ORDER BY name", (app.id,)
        ) as cur:
            return [(r[0], bytes(r[1])) for r in await cur.fetchall()]

    async def set_env_values(self, app: App, blobs: Mapping[str, bytes]) -> None:
        """Add or replace these env vars, all or none."""
        async with self._transaction():
            await self._db.executemany(
                "INSERT INTO env_vars (app_id, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value",
                [(app.id, n, v) for n, v in blobs.items()],
            )

    async def unset_env_values(self, app: App, names: Sequence[str]) -> None:
        """Remove these env vars, all or none; NotFound names the ones the app lacks."""
        async with self._transaction():
            marks = ", ".join("?" * len(names))
            async with self._db.execute(
                f"SELECT name FROM env_vars WHERE app_id = ? AND name IN ({marks})",
                (app.id, *names),
            ) as cur:
                present = {r[0] for r in await cur.fetchall()}
            missing = [n for n in names if n not in present]
            if missing:
                raise NotFound(
                    f"{app.name} has no env var {', '.join(missing)}; "
                    f"`config {app.name}` lists its names"
                )
            await self._db.execute(
                f"DELETE FROM env_vars WHERE app_id = ? AND name IN ({marks})", (app.id, *names)
            )

    async def snapshot_env(self, app: App, deployment_id: int) -> None:
        """Make the deployment's env a copy of the app's env as it is now."""
        deployment = await self.get_deployment(deployment_id)
        if deployment.app_id != app.id:
            raise NotFound(f"no deployment #{deployment_id} of {app.name}")
        async with self._transaction():
            await self._copy_env(app.id, deployment_id)

    async def deployment_env_values(
        self, deployment_id: int
    ) -> tuple[str, list[tuple[str, bytes]]]:
        """The deployment's app name and (name, blob) of the env it runs with."""
        deployment = await self.get_deployment(deployment_id)
        async with self._db.execute(
            "SELECT name, value FROM deployment_env WHERE deployment_id = ? ORDER BY name",
            (deployment_id,),
        ) as cur:
            return deployment.app_name, [(r[0], bytes(r[1])) for r in await cur.fetchall()]

    _ALL_ENV = (
        "SELECT 'app', a.id, a.name, e.name, e.value FROM env_vars e "
        "JOIN apps a ON a.id = e.app_id "
        "UNION ALL SELECT 'deployment', d.id, a.name, e.name, e.value FROM deployment_env e "
        "JOIN deployments d ON d.id = e.deployment_id JOIN apps a ON a.id = d.app_id "
        # TLS private keys (store/tls.py) are under the same key, so rotation covers them.
        "UNION ALL SELECT 'tls', t.app_id, a.name, 'tls-key', t.key FROM app_tls t "
        "JOIN apps a ON a.id = t.app_id WHERE t.key IS NOT NULL "
        "UNION ALL SELECT 'acme', rowid, directory, 'acme-account', key FROM acme_account "
        # Backing services' passwords (store/services.py), bound to 'service:NAME'.
        "UNION ALL SELECT 'service', id, 'service:' || name, 'password', password FROM services "
        # Git-host secrets (store/git_tables.py): tokens, deploy keys, webhook secrets.
        "UNION ALL SELECT 'git', s.app_id, a.name, s.name, s.value FROM app_secrets s "
        "JOIN apps a ON a.id = s.app_id "
        # Notification channel URLs (store/channels.py); '*' owns the server-wide ones.
        "UNION ALL SELECT 'channel', c.id, COALESCE(a.name, '*'), 'notify-channel', c.url "
        "FROM notify_channels c LEFT JOIN apps a ON a.id = c.app_id"
    )
    _REWRITE: ClassVar[dict[str, str]] = {
        "app": "UPDATE env_vars SET value = ? WHERE app_id = ? AND name = ?",
        "deployment": "UPDATE deployment_env SET value = ? WHERE deployment_id = ? AND name = ?",
        "tls": "UPDATE app_tls SET key = ? WHERE app_id = ? AND ? = 'tls-key'",
        "acme": "UPDATE acme_account SET key = ? WHERE rowid = ? AND ? = 'acme-account'",
        "service": "UPDATE services SET password = ? WHERE id = ? AND ? = 'password'",
        "git": "UPDATE app_secrets SET value = ? WHERE app_id = ? AND name = ?",
        "channel": "UPDATE notify_channels SET url = ? WHERE id = ? AND ? = 'notify-channel'",
    }

    async def any_env_value(self) -> tuple[str, str, bytes] | None:
        """One stored value (app, name, blob), to check a master key against; None if none."""
        async with self._db.execute(self._ALL_ENV + " LIMIT 1") as cur:
            row = await cur.fetchone()
        return (row[2], row[3], bytes(row[4])) if row else None

    async def reencrypt_env(self, transform: Callable[[str, str, bytes], bytes]) -> int:
        """Replace every stored value (apps' and deployments') by transform(app, name, blob)
        in one transaction: if it raises, nothing changes. Returns how many were rewritten."""
        async with self._transaction():
            async with self._db.execute(self._ALL_ENV) as cur:
                rows = list(await cur.fetchall())
            for kind, owner, app, name, blob in rows:
                await self._db.execute(
                    self._REWRITE[kind], (transform(app, name, bytes(blob)), owner, name)
                )
        return len(rows)
