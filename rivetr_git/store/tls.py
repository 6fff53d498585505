"""The HTTPS tables of the Store: each app's certificate and policy, and the ACME account.

Private keys come in and go out as ciphertext (crypto.py blobs); proxy/tls/certs.py
encrypts and decrypts them. `app_tls` goes with its app (ON DELETE CASCADE).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiosqlite

from rivetr_git.models import App


@dataclass(frozen=True)
class TlsRecord:
    app_id: int
    app: str
    auto: bool  # certs:auto:enable: ACME issues and renews
    redirect: bool | None  # None: the https_redirect setting decides
    hsts: int
    source: str | None  # 'uploaded', 'acme', or None (no certificate yet)
    chain_pem: str | None
    key: bytes | None  # encrypted
    not_after: str | None
    issued_at: str | None
    last_error: str | None
    last_error_at: str | None
    failures: int
    next_attempt: float | None  # time.time() before which no renewal is tried (backoff)


_COLUMNS = (
    "t.app_id, a.name, t.auto, t.redirect, t.hsts, t.source, t.chain_pem, t.key, "
    "t.not_after, t.issued_at, t.last_error, t.last_error_at, t.failures, "
    "t.next_attempt"
)


def _record(row: Sequence[Any]) -> TlsRecord:
    return TlsRecord(
        app_id=row[0],
        app=row[1],
        auto=bool(row[2]),
        redirect=None if row[3] is None else bool(row[3]),
        hsts=row[4],
        source=row[5],
        chain_pem=row[6],
        key=bytes(row[7]) if row[7] is not None else None,
        not_after=row[8],
        issued_at=row[9],
        last_error=row[10],
        last_error_at=row[11],
        failures=row[12],
        next_attempt=row[13],
    )


class TlsTables:
    """Mixed into Store, whose connection and transactions it shares."""

    _db: aiosqlite.Connection
    _transaction: Callable[[], AbstractAsyncContextManager[None]]

    async def tls_of(self, app: App) -> TlsRecord | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM app_tls t JOIN apps a ON a.id = t.app_id WHERE t.app_id = ?",
            (app.id,),
        ) as cur:
            row = await cur.fetchone()
        return _record(row) if row else None

    async def all_tls(self) -> list[TlsRecord]:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM app_tls t JOIN apps a ON a.id = t.app_id ORDER BY a.name"
        ) as cur:
            return [_record(r) for r in await cur.fetchall()]

    async def set_tls_policy(self, app: App, **fields: Any) -> None:
        """Change auto, redirect and/or hsts (the row is created on first use)."""
        unknown = set(fields) - {"auto", "redirect", "hsts"}
        if unknown:
            raise ValueError(f"not TLS policy fields: {sorted(unknown)}")
        async with self._transaction():
            await self._db.execute("INSERT OR IGNORE INTO app_tls (app_id) VALUES (?)", (app.id,))
            for name, value in fields.items():
                await self._db.execute(
                    f"UPDATE app_tls SET {name} = ? WHERE app_id = ?", (value, app.id)
                )

    async def put_certificate(
        self, app: App, source: str, chain_pem: str, key: bytes, not_after: str, issued_at: str
    ) -> None:
        """Install a certificate (replacing any); clears the error and backoff state."""
        async with self._transaction():
            await self._db.execute("INSERT OR IGNORE INTO app_tls (app_id) VALUES (?)", (app.id,))
            await self._db.execute(
                "UPDATE app_tls SET source = ?, chain_pem = ?, key = ?, not_after = ?, "
                "issued_at = ?, last_error = NULL, last_error_at = NULL, failures = 0, "
                "next_attempt = NULL WHERE app_id = ?",
                (source, chain_pem, key, not_after, issued_at, app.id),
            )

    async def remove_certificate(self, app: App) -> bool:
        """Drop the app's certificate and stop automatic renewal; False if it had none."""
        record = await self.tls_of(app)
        if record is None or (record.chain_pem is None and not record.auto):
            return False
        await self._db.execute(
            "UPDATE app_tls SET auto = 0, source = NULL, chain_pem = NULL, key = NULL, "
            "not_after = NULL, issued_at = NULL, last_error = NULL, last_error_at = NULL, "
            "failures = 0, next_attempt = NULL WHERE app_id = ?",
            (app.id,),
        )
        return True

    async def record_tls_failure(self, app: App, error: str, at: str, next_attempt: float) -> int:
        """Note a failed order; returns how many failed in a row."""
        async with self._transaction():
            await self._db.execute(
                "UPDATE app_tls SET last_error = ?, last_error_at = ?, failures = failures + 1, "
                "next_attempt = ? WHERE app_id = ?",
                (error, at, next_attempt, app.id),
            )
            async with self._db.execute(
                "SELECT failures FROM app_tls WHERE app_id = ?", (app.id,)
            ) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def acme_account(self, directory: str) -> tuple[bytes, str] | None:
        """(encrypted account key, account URL) registered at this directory."""
        async with self._db.execute(
            "SELECT key, uri FROM acme_account WHERE directory = ?", (directory,)
        ) as cur:
            row = await cur.fetchone()
        return (bytes(row[0]), row[1]) if row else None

    async def save_acme_account(self, directory: str, key: bytes, uri: str) -> None:
        await self._db.execute(
            "INSERT INTO acme_account (directory, key, uri) VALUES (?, ?, ?) "
            "ON CONFLICT (directory) DO UPDATE SET key = excluded.key, uri = excluded.uri",
            (directory, key, uri),
        )
