"""Day-2 pieces without the engine: migrating a database that has data through the
deployments rebuild, deploy command lists and rivetr.toml's [deploy] (issue 17)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from rivetr_git.admin.app_settings import DEPLOY_COMMANDS, parse_assignments
from rivetr_git.errors import CheckoutFailed, ValidationError
from rivetr_git.models import Status
from rivetr_git.pipeline import repo_config
from rivetr_git.store.database import MIGRATIONS, Store

_REBUILD = next(i for i, sql in enumerate(MIGRATIONS) if "deployments_new" in sql)


async def test_an_old_database_keeps_its_logs_and_commands_through_the_migrations(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rivetr.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA foreign_keys=ON")
    for i, sql in enumerate(MIGRATIONS[: _REBUILD - 2]):
        raw.executescript(f"BEGIN; {sql}; PRAGMA user_version = {i + 1}; COMMIT;")
    raw.execute(
        "INSERT INTO apps (id, name, created_at, pre_deploy) VALUES (1, 'old', 'now', 'echo a')"
    )
    raw.execute(
        "INSERT INTO deployments (id, app_id, status, commit_sha, created_at) "
        "VALUES (7, 1, 'running', 'abc', '2026-01-01T00:00:00.000+00:00')"
    )
    raw.execute(
        "INSERT INTO deployment_logs (deployment_id, at, stage, stream, line) "
        "VALUES (7, 1767225600.25, 'building', 'out', 'step 1')"
    )
    raw.close()

    store = await Store.open(path)
    try:
        app = await store.get_app("old")
        assert app.pre_commands == ("echo a",)  # a single command became a list of one
        assert [ln.line for ln in await store.get_logs(7)] == ["step 1"]  # not cascaded away
        await store.set_status(7, Status.CANCELLED, cancelled_by="alice")
        assert (await store.get_deployment(7)).cancelled_by == "alice"
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert list(db.execute("SELECT timestamp, message FROM deployment_logs")) == [
            ("2026-01-01T00:00:00.250000Z", "step 1")
        ]
        assert db.execute("PRAGMA foreign_keys").fetchone() == (0,)  # a fresh connection
        assert list(db.execute("PRAGMA foreign_key_check")) == []


def test_a_repeated_key_appends_a_command_and_an_empty_one_clears() -> None:
    values = parse_assignments(["pre=a", "post=p", "pre=b c", "timeout=5"], DEPLOY_COMMANDS)
    assert json.loads(values["pre_deploy"]) == ["a", "b c"]
    assert json.loads(values["post_deploy"]) == ["p"]
    assert parse_assignments(["pre="], DEPLOY_COMMANDS) == {"pre_deploy": None}
    assert parse_assignments(["auto_rollback=off"], DEPLOY_COMMANDS) == {"auto_rollback": False}
    with pytest.raises(ValidationError, match="auto_rollback"):
        parse_assignments(["auto_rollback=maybe"], DEPLOY_COMMANDS)


def test_rivetr_toml_deploy_takes_a_command_or_a_list() -> None:
    parsed = repo_config.parse(b'[deploy]\npre = ["a", "b"]\npost = "c"\n')
    assert parsed.pre_deploy == ("a", "b") and parsed.post_deploy == ("c",)
    assert repo_config.parse(b"").pre_deploy == ()
    for bad in (b"[deploy]\npre = 3\n", b'[deploy]\npre = [""]\n', b'[deploy]\nwhen = "x"\n'):
        with pytest.raises(CheckoutFailed, match=r"\[deploy\]"):
            repo_config.parse(bad)
