"""Access to the master key outside the daemon, and `rivetr-git secrets rotate`.

Rotation re-encrypts every env var value under a new master key. Order, chosen so that
an interruption at any point loses nothing:
 1. the new key is written to `master.key.new` (0600, fsynced); the old one stays in
    `master.key`;
 2. every value (apps' and deployments') is re-encrypted in one database transaction;
 3. `master.key.new` is renamed over `master.key` (atomic), and the directory fsynced.
Cut short before 2 commits, the database still matches `master.key`; cut short between 2
and 3, it matches `master.key.new`. The next start (or rotation) tries a stored value
against both and keeps the key that decrypts it (crypto.open_master_key), so either way the
right key ends up in `master.key`. The old key is gone once 3 is done: nothing uses it.

The daemon (and any local command that writes env vars, see `local_env_vars`) holds a
shared lock on `master.key.lock`; a rotation takes it exclusively, so a rotation refuses to
run beside the daemon, and nothing can write a value under the old key while one runs.
(The lock goes with the process, even on SIGKILL: no stale pid files.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from rivetr_git.errors import ConfigError, DecryptionFailed, RivetrError
from rivetr_git.secrets.crypto import (
    Cipher,
    key_path,
    open_master_key,
    pending_path,
    sync_dir,
    write_key,
)
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.store.database import Store

LOCK_FILE = "master.key.lock"


def lock_master_key(data_dir: Path, *, exclusive: bool) -> IO[bytes]:
    """Take the master key lock (shared: the daemon; exclusive: a rotation) without waiting.

    Keep the returned file open as long as the lock is needed; closing it releases it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    f = open(data_dir / LOCK_FILE, "ab")  # noqa: SIM115 - lives as long as the lock
    try:
        fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        if exclusive:
            raise RivetrError(
                "the rivetr-git server (or another rivetr-git command) is using this data "
                "dir's master key; stop the server first (Ctrl-C or SIGTERM: app containers "
                "keep running), rotate, then start it again"
            ) from None
        raise ConfigError(
            "a master key rotation (`rivetr-git secrets rotate`) is running on this data "
            "dir; try again when it has finished"
        ) from None
    return f


@contextlib.asynccontextmanager
async def local_env_vars(data_dir: Path, db_path: Path) -> AsyncIterator[EnvVars]:
    """EnvVars for a local command (the CLI on the server's machine), whether or not the
    server runs; holds the shared key lock so no rotation can run meanwhile."""
    with lock_master_key(data_dir, exclusive=False):
        store = await Store.open(db_path)
        try:
            yield EnvVars(store, open_master_key(data_dir, await store.any_env_value()))
        finally:
            await store.close()


async def rotate(data_dir: Path, db_path: Path) -> int:
    """Re-encrypt every stored value under a new key; return how many there were."""
    with lock_master_key(data_dir, exclusive=True):
        store = await Store.open(db_path)
        try:
            old = open_master_key(data_dir, await store.any_env_value())
            new = Cipher.generate()
            pending = pending_path(data_dir)
            pending.unlink(missing_ok=True)
            write_key(pending, new)
            try:
                count = await EnvVars(store, old).rotate(new)
            except DecryptionFailed:
                pending.unlink()  # raised before the commit: nothing changed
                raise
            # Any other failure leaves master.key.new: the next start settles which is right.
            os.replace(pending, key_path(data_dir))
            sync_dir(data_dir)
        finally:
            await store.close()
    return count
