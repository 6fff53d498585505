"""Pruning old deployments (keep_deployments) and the storage table, on a real SQLite store."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rivetr_git.errors import NotFound, ValidationError
from rivetr_git.models import App, LogLine, Status
from rivetr_git.store.database import Store
from rivetr_git.store.mounts import AppMount


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "rivetr.db")
    try:
        yield opened
    finally:
        await opened.close()


async def _deploy(store: Store, app: App, status: Status, image: str | None = None) -> int:
    d = await store.create_deployment(app, "1" * 40, "msg", "alice")
    await store.set_status(d.id, status, image=image)
    await store.append_logs(d.id, [LogLine(1.0, "building", "stdout", f"line of #{d.id}")])
    return d.id


async def test_pruning_keeps_the_newest_the_live_the_in_flight_and_kept_images(
    store: Store, tmp_path: Path
) -> None:
    app = await store.create_app("stprune")
    other = await store.create_app("stother")
    live = await _deploy(store, app, Status.RUNNING, "img:1")  # old, but live
    kept_image = await _deploy(store, app, Status.REPLACED, "img:2")  # keep_releases keeps it
    old = [await _deploy(store, app, Status.FAILED) for _ in range(3)]
    old.append(await _deploy(store, app, Status.REPLACED, "img:gone"))
    in_flight = await _deploy(store, app, Status.BUILDING)
    newest = [await _deploy(store, app, Status.FAILED) for _ in range(2)]
    elsewhere = await _deploy(store, other, Status.FAILED)

    assert await store.prune_deployments(app, 2, {"img:1", "img:2"}) == len(old)
    left = {d.id for d in await store.list_deployments(app)}
    assert left == {live, kept_image, in_flight, *newest}
    # Their logs went with them (ON DELETE CASCADE); the others' stay.
    with sqlite3.connect(tmp_path / "rivetr.db") as raw:
        logged = {r[0] for r in raw.execute("SELECT DISTINCT deployment_id FROM deployment_logs")}
    assert logged == left | {elsewhere}
    # Nothing more to prune.
    assert await store.prune_deployments(app, 2, {"img:1", "img:2"}) == 0


async def test_pruning_keeps_the_release_a_kept_rollback_names(store: Store) -> None:
    app = await store.create_app("stchain")
    first = await _deploy(store, app, Status.REPLACED, "img:1")
    await _deploy(store, app, Status.FAILED)
    target = await store.get_deployment(first)
    rollback = await store.create_deployment(app, "1" * 40, "msg", "alice", rollback_of=target)
    await store.set_status(rollback.id, Status.RUNNING)
    # keep=1: only the rollback is among the newest, and it names #first (a foreign key).
    assert await store.prune_deployments(app, 1, set()) == 1
    assert {d.id for d in await store.list_deployments(app)} == {first, rollback.id}


async def test_mount_rows_one_per_path_and_unmount_says_what_is_missing(store: Store) -> None:
    app = await store.create_app("stmounts")
    await store.add_mount(app, AppMount("/data", "data", bind=False))
    await store.add_mount(app, AppMount("/up", "/srv/up", bind=True))
    with pytest.raises(ValidationError, match="already has data mounted"):
        await store.add_mount(app, AppMount("/data", "other", bind=False))
    assert await store.mounts(app) == [
        AppMount("/data", "data", False),
        AppMount("/up", "/srv/up", True),
    ]
    assert await store.remove_mount(app, "/up") == AppMount("/up", "/srv/up", True)
    with pytest.raises(NotFound, match="nothing is mounted at /up"):
        await store.remove_mount(app, "/up")
    await store.delete_app(app)
    again = await store.create_app("stmounts")
    assert await store.mounts(again) == []
