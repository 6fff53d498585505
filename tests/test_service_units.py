"""Backing services without Docker: kinds, versions, URLs, env var names, the tables, the
master key rotation over service passwords, backup listing/pruning and the schedule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rivetr_git.errors import AlreadyExists, ValidationError
from rivetr_git.secrets.crypto import Cipher
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.services.backups import Backup, Backups, cron_schedule, run_schedule
from rivetr_git.services.kinds import KINDS, env_name_for, kind_of, version_of, with_version
from rivetr_git.store.database import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "rivetr.db")
    try:
        yield opened
    finally:
        await opened.close()


def test_versions_replace_the_tag_only() -> None:
    assert with_version("postgres:16", None) == "postgres:16"
    assert with_version("postgres:16", "15") == "postgres:15"
    assert with_version("postgres", "15.4-bookworm") == "postgres:15.4-bookworm"
    assert with_version("localhost:5000/pg", "15") == "localhost:5000/pg:15"
    assert with_version("localhost:5000/pg:16", "15") == "localhost:5000/pg:15"
    for bad in ("", "15 16", "-1", "../x", "a" * 129):
        with pytest.raises(ValidationError, match="not a version"):
            with_version("postgres:16", bad)
    assert version_of("postgres:16") == "16"
    assert version_of("localhost:5000/pg") == "latest"


def test_unknown_kind_names_the_kinds() -> None:
    with pytest.raises(ValidationError, match="mariadb, postgres, redis"):
        kind_of("oracle")
    assert kind_of("redis") is KINDS["redis"]


def test_urls_and_env_names() -> None:
    pg, rd, my = KINDS["postgres"], KINDS["redis"], KINDS["mariadb"]
    assert pg.url("db", "pw", "db", 5432) == "postgres://rivetr:pw@db:5432/db"
    assert my.url("db", "pw", "db", 3306) == "mysql://rivetr:pw@db:3306/db"
    assert rd.url("c", "pw", "c", 6379) == "redis://default:pw@c:6379/0"
    assert env_name_for(pg, "db", set()) == "DATABASE_URL"
    assert env_name_for(pg, "my-db", {"DATABASE_URL"}) == "MY_DB_URL"
    assert env_name_for(rd, "cache", {"DATABASE_URL"}) == "REDIS_URL"


def test_password_never_in_an_argv() -> None:
    for kind in KINDS.values():
        env = kind.env("db", "s3cret")
        assert "s3cret" in env.values()
        commands = [kind.health("db"), kind.dump("db"), kind.restore("db"), kind.connect("db")]
        for argv in [*commands, kind.command or []]:
            assert not any("s3cret" in arg for arg in argv), argv


def test_cron_schedules_are_checked() -> None:
    assert cron_schedule("0 3 * * *") == "0 3 * * *"
    for bad in ("", "0 3 * *", "61 * * * *", "every day"):
        with pytest.raises(ValidationError, match="not a cron schedule"):
            cron_schedule(bad)


async def test_names_are_shared_by_apps_and_services(store: Store) -> None:
    await store.create_app("svapp")
    with pytest.raises(AlreadyExists, match="name of an app"):
        await store.add_service("svapp", "postgres", "postgres:16", b"x", "now")
    await store.add_service("svdb", "postgres", "postgres:16", b"x", "now")
    with pytest.raises(AlreadyExists, match="already exists"):
        await store.add_service("svdb", "redis", "redis:7", b"x", "now")
    with pytest.raises(AlreadyExists, match="name of a service"):
        await store.create_app("svdb")
    assert [r.name for r in await store.list_services()] == ["svdb"]


async def test_a_link_sets_and_unlinking_removes_the_env_var(store: Store) -> None:
    app = await store.create_app("svapp")
    row = await store.add_service("svdb", "postgres", "postgres:16", b"x", "now")
    await store.add_service_link(row, app, "DATABASE_URL", b"blob")
    assert await store.env_values(app) == [("DATABASE_URL", b"blob")]
    with pytest.raises(AlreadyExists):
        await store.add_service_link(row, app, "SVDB_URL", b"blob")
    assert [link.app for link in await store.service_links(service="svdb")] == ["svapp"]
    assert await store.remove_service_link(row, app) == "DATABASE_URL"
    assert await store.env_values(app) == []
    assert await store.service_links() == []


async def test_rotation_reencrypts_service_passwords(store: Store) -> None:
    old, new = Cipher.generate(), Cipher.generate()
    blob = old.encrypt("service:svdb", "password", "pw-1")
    await store.add_service("svdb", "postgres", "postgres:16", blob, "now")
    assert await EnvVars(store, old).rotate(new) == 1
    row = await store.get_service("svdb")
    assert new.decrypt("service:svdb", "password", row.password) == "pw-1"
    assert not old.can_decrypt("service:svdb", "password", row.password)


def test_backups_are_listed_and_pruned_by_name(tmp_path: Path) -> None:
    backups = Backups(None, None, None, tmp_path)  # type: ignore[arg-type]  # files only
    directory = tmp_path / "svdb"
    directory.mkdir()
    names = [f"2026120{d}T030000.000Z.dump" for d in range(1, 6)]
    for name in [*names, "20261206T030000.000Z.dump.partial", "notes.txt"]:
        (directory / name).write_bytes(b"PGDMP")
    assert [b.name for b in backups.of("svdb")] == names
    assert backups.prune("svdb", 2) == names[:3]
    assert [b.name for b in backups.of("svdb")] == names[3:]
    assert (directory / "notes.txt").exists()
    assert backups.of("other") == []


class _Recorder:
    def __init__(self) -> None:
        self.made: list[str] = []
        self.pruned: list[tuple[str, int]] = []

    async def backup(self, name: str) -> Backup:
        self.made.append(name)
        return Backup("x", 0, Path("x"))

    def prune(self, name: str, keep: int) -> list[str]:
        self.pruned.append((name, keep))
        return []


async def test_the_schedule_backs_up_when_due(store: Store) -> None:
    await store.add_service("svdb", "postgres", "postgres:16", b"x", "now")
    await store.add_service("svother", "redis", "redis:7", b"x", "now")
    await store.update_service("svdb", backup_schedule="0 3 * * *", backup_keep=2)
    times = iter(datetime(2026, 12, 2, 2, 50) + timedelta(minutes=5 * i) for i in range(6))
    ticks = 0

    async def sleep(seconds: float) -> None:
        nonlocal ticks
        ticks += 1
        if ticks > 5:
            raise asyncio.CancelledError

    recorder = _Recorder()
    with pytest.raises(asyncio.CancelledError):
        await run_schedule(store, recorder, lambda: next(times), sleep)
    # 02:50 start; checks at 02:55, 03:00 (due), 03:05, 03:10, 03:15: exactly one backup.
    assert recorder.made == ["svdb"]
    assert recorder.pruned == [("svdb", 2)]
