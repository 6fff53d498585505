"""The Store on a real SQLite file: migrations, keys, apps, access, deployments and logs."""

from __future__ import annotations

import gc
import sqlite3
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rivetr_git.errors import AlreadyExists, NotFound, RivetrError
from rivetr_git.models import App, LogLine, Role, SshKey, Status
from rivetr_git.store.database import MIGRATIONS, Store

SHA1 = "1" * 40
SHA2 = "2" * 40
SHA3 = "3" * 40


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "rivetr.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(db_path)
    try:
        yield opened
    finally:
        await opened.close()


def _raw(db_path: Path) -> sqlite3.Connection:
    """A second, independent connection, to look at the file as SQLite sees it."""
    return sqlite3.connect(db_path, isolation_level=None)


async def _key(store: Store, name: str, role: Role = Role.DEVELOPER) -> SshKey:
    return await store.add_key(name, f"SHA256:{name}-fingerprint", f"ssh-ed25519 AAAA{name}", role)


# --- schema -----------------------------------------------------------------------------------


async def test_migrations_set_user_version_and_wal(store: Store, db_path: Path) -> None:
    assert db_path.exists()
    assert await store.schema_version() == len(MIGRATIONS)
    raw = _raw(db_path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"apps", "deployments", "deployment_logs", "ssh_keys"} <= tables
    finally:
        raw.close()


async def test_reopen_is_idempotent_and_keeps_data(db_path: Path) -> None:
    first = await Store.open(db_path)
    try:
        await first.create_app("web")
        await _key(first, "alice", Role.ADMIN)
    finally:
        await first.close()
    for _ in range(2):
        again = await Store.open(db_path)
        try:
            assert await again.schema_version() == len(MIGRATIONS)
            assert [a.name for a in await again.list_apps()] == ["web"]
            assert [k.name for k in await again.list_keys()] == ["alice"]
        finally:
            await again.close()


async def test_newer_schema_is_refused_without_leaking_the_connection(db_path: Path) -> None:
    await (await Store.open(db_path)).close()
    raw = _raw(db_path)
    try:
        raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    finally:
        raw.close()
    message = ""
    gc.collect()  # earlier tests' garbage (sockets, say) must not be counted as ours
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            await Store.open(db_path)
        except RivetrError as exc:
            message = str(exc)
        gc.collect()
    assert "upgrade" in message
    # The refused open must close its own connection, not leave it to the garbage collector.
    unclosed = [
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning)
        and not any(net in str(w.message) for net in ("socket", "transport"))
    ]
    assert unclosed == [], "Store.open leaked its aiosqlite connection"


# --- keys -------------------------------------------------------------------------------------


async def test_keys_add_get_list_remove(store: Store) -> None:
    assert await store.list_keys() == []
    bob = await store.add_key("bob", "SHA256:bbb", "ssh-ed25519 AAAAbob", Role.DEVELOPER)
    alice = await store.add_key("alice", "SHA256:aaa", "ssh-ed25519 AAAAalice", Role.ADMIN)
    assert alice.name == "alice"
    assert alice.fingerprint == "SHA256:aaa"
    assert alice.public_key == "ssh-ed25519 AAAAalice"
    assert alice.role is Role.ADMIN and alice.is_admin
    assert bob.role is Role.DEVELOPER and not bob.is_admin
    assert alice.created_at
    assert await store.get_key("alice") == alice
    assert await store.key_by_fingerprint("SHA256:bbb") == bob
    assert await store.key_by_fingerprint("SHA256:nope") is None
    assert [k.name for k in await store.list_keys()] == ["alice", "bob"]
    await store.remove_key("alice")
    assert [k.name for k in await store.list_keys()] == ["bob"]
    assert await store.key_by_fingerprint("SHA256:aaa") is None


async def test_duplicate_key_name_is_refused(store: Store) -> None:
    await store.add_key("alice", "SHA256:aaa", "ssh-ed25519 AAAA1", Role.ADMIN)
    with pytest.raises(AlreadyExists) as info:
        await store.add_key("alice", "SHA256:other", "ssh-ed25519 AAAA2", Role.DEVELOPER)
    assert "alice" in str(info.value)
    assert "already exists" in str(info.value)
    assert (await store.get_key("alice")).fingerprint == "SHA256:aaa"


async def test_duplicate_key_fingerprint_is_refused_naming_the_owner(store: Store) -> None:
    await store.add_key("alice", "SHA256:aaa", "ssh-ed25519 AAAA1", Role.ADMIN)
    with pytest.raises(AlreadyExists) as info:
        await store.add_key("mallory", "SHA256:aaa", "ssh-ed25519 AAAA1", Role.DEVELOPER)
    assert "already registered as 'alice'" in str(info.value)
    assert [k.name for k in await store.list_keys()] == ["alice"]


async def test_unknown_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        await store.get_key("ghost")
    assert "ghost" in str(info.value) and "keys list" in str(info.value)
    with pytest.raises(NotFound, match="ghost"):
        await store.remove_key("ghost")


# --- apps and access --------------------------------------------------------------------------


async def test_apps_create_find_list(store: Store) -> None:
    assert await store.list_apps() == []
    assert await store.find_app("web") is None
    web = await store.create_app("web")
    api = await store.create_app("api")
    assert isinstance(web, App)
    assert web.name == "web" and web.id != api.id
    assert web.deploy_branch is None and web.port is None and web.health_path is None
    assert web.dockerfile == "Dockerfile"
    assert await store.find_app("web") == web
    assert await store.get_app("api") == api
    assert [a.name for a in await store.list_apps()] == ["api", "web"]
    with pytest.raises(AlreadyExists, match="web"):
        await store.create_app("web")
    with pytest.raises(NotFound) as info:
        await store.get_app("ghost")
    assert "ghost" in str(info.value) and "apps list" in str(info.value)


async def test_update_app(store: Store) -> None:
    await store.create_app("web")
    web = await store.update_app("web", deploy_branch="production", port=8000)
    assert web.deploy_branch == "production" and web.port == 8000
    with pytest.raises(RivetrError, match="unknown app fields"):
        await store.update_app("web", id=1)


async def test_has_access_admin_vs_developer(store: Store) -> None:
    web = await store.create_app("web")
    api = await store.create_app("api")
    admin = await _key(store, "alice", Role.ADMIN)
    dev = await _key(store, "bob")
    assert await store.has_access(admin, web)
    assert await store.has_access(admin, api)
    assert not await store.has_access(dev, web)
    assert not await store.has_access(dev, api)
    await store.grant("bob", "web")
    await store.grant("bob", "web")  # granting twice is harmless
    assert await store.has_access(dev, web)
    assert not await store.has_access(dev, api)
    with pytest.raises(NotFound):
        await store.grant("ghost", "web")
    with pytest.raises(NotFound):
        await store.grant("bob", "ghost")


async def test_removed_key_grants_do_not_pass_to_a_new_key_of_the_same_name(store: Store) -> None:
    web = await store.create_app("web")
    await _key(store, "bob")
    await store.grant("bob", "web")
    await store.remove_key("bob")
    newcomer = await store.add_key("bob", "SHA256:new", "ssh-ed25519 AAAAnew", Role.DEVELOPER)
    assert not await store.has_access(newcomer, web)


# --- deployments ------------------------------------------------------------------------------


async def test_deployment_lifecycle_and_promote(store: Store) -> None:
    web = await store.create_app("web")
    first = await store.create_deployment(web, SHA1, "first", "alice")
    assert first.status is Status.PENDING
    assert first.app_name == "web" and first.app_id == web.id
    assert first.commit_sha == SHA1 and first.commit_message == "first"
    assert first.pushed_by == "alice"
    assert first.finished_at is None
    assert await store.current_deployment(web) is None

    for status in (Status.CLONING, Status.BUILDING, Status.STARTING, Status.HEALTH_CHECK):
        await store.set_status(first.id, status)
        assert (await store.get_deployment(first.id)).status is status
        assert (await store.get_deployment(first.id)).finished_at is None
    await store.set_status(
        first.id, Status.STARTING, image="img:1", container_id="c1", host_port=40001
    )
    await store.promote(first.id, web.id)
    live = await store.get_deployment(first.id)
    assert live.status is Status.RUNNING
    assert live.image == "img:1" and live.container_id == "c1" and live.host_port == 40001
    assert live.finished_at is not None
    assert await store.current_deployment(web) == live

    second = await store.create_deployment(web, SHA2, "second", None)
    await store.promote(second.id, web.id)
    assert (await store.get_deployment(first.id)).status is Status.REPLACED
    assert (await store.get_deployment(second.id)).status is Status.RUNNING
    current = await store.current_deployment(web)
    assert current is not None and current.id == second.id

    deployments = await store.list_deployments(web)
    assert [d.id for d in deployments] == [second.id, first.id]  # newest first
    assert [d.status for d in deployments].count(Status.RUNNING) == 1


async def test_promote_keeps_exactly_one_running_per_app(store: Store) -> None:
    web = await store.create_app("web")
    api = await store.create_app("api")
    api_live = await store.create_deployment(api, SHA1, "api", None)
    await store.promote(api_live.id, api.id)
    ids = []
    for sha in (SHA1, SHA2, SHA3):
        d = await store.create_deployment(web, sha, "m", None)
        ids.append(d.id)
        await store.promote(d.id, web.id)
        running = await store.deployments_with_status([Status.RUNNING])
        assert sorted(x.id for x in running if x.app_id == web.id) == [d.id]
    # Other apps are left alone.
    assert (await store.get_deployment(api_live.id)).status is Status.RUNNING
    statuses = [(await store.get_deployment(i)).status for i in ids]
    assert statuses == [Status.REPLACED, Status.REPLACED, Status.RUNNING]
    # Promoting the running one again changes nothing.
    await store.promote(ids[-1], web.id)
    assert (await store.get_deployment(ids[-1])).status is Status.RUNNING


async def test_failed_deployment_does_not_touch_running_one(store: Store) -> None:
    web = await store.create_app("web")
    live = await store.create_deployment(web, SHA1, "ok", None)
    await store.promote(live.id, web.id)
    broken = await store.create_deployment(web, SHA2, "broken", None)
    await store.set_status(broken.id, Status.FAILED, error_message="build: exit 1")
    failed = await store.get_deployment(broken.id)
    assert failed.status is Status.FAILED
    assert failed.error_message == "build: exit 1"
    assert failed.finished_at is not None
    current = await store.current_deployment(web)
    assert current is not None and current.id == live.id
    in_flight = await store.deployments_with_status([Status.PENDING, Status.BUILDING])
    assert in_flight == []
    with pytest.raises(RivetrError, match="unknown deployment fields"):
        await store.set_status(broken.id, Status.FAILED, app_id=2)


async def test_status_check_constraint_rejects_unknown_status(store: Store, db_path: Path) -> None:
    web = await store.create_app("web")
    d = await store.create_deployment(web, SHA1, "m", None)
    raw = _raw(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute("UPDATE deployments SET status = 'bogus' WHERE id = ?", (d.id,))
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute(
                "INSERT INTO deployments (app_id, status, commit_sha, created_at) "
                "VALUES (?, 'RUNNING', ?, 'now')",
                (web.id, SHA2),
            )
        for status in Status:  # every known status is allowed
            raw.execute("UPDATE deployments SET status = ? WHERE id = ?", (status.value, d.id))
    finally:
        raw.close()


async def test_unknown_deployment_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="#12345"):
        await store.get_deployment(12345)


# --- logs -------------------------------------------------------------------------------------


async def test_logs_append_and_get_in_order(store: Store) -> None:
    web = await store.create_app("web")
    d = await store.create_deployment(web, SHA1, "m", None)
    other = await store.create_deployment(web, SHA2, "m", None)
    assert await store.get_logs(d.id) == []
    first = [
        LogLine(1.0, "cloning", "header", "-----> Cloning"),
        LogLine(1.5, "building", "stdout", "Step 1/3"),
    ]
    second = [
        LogLine(0.5, "building", "stderr", "earlier clock, later line"),
        LogLine(2.0, "running", "header", "-----> Running"),
    ]
    await store.append_logs(d.id, first)
    await store.append_logs(other.id, [LogLine(9.0, "cloning", "stdout", "not mine")])
    await store.append_logs(d.id, [])
    await store.append_logs(d.id, second)
    assert await store.get_logs(d.id) == first + second  # insertion order, not clock order
    assert await store.get_logs(other.id) == [LogLine(9.0, "cloning", "stdout", "not mine")]


async def test_logs_of_unknown_deployment_are_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get_logs(999)
