"""Day-2 operations over real SSH and the real engine: the seed's runbook queries, deploy
command lists, per-app auto-rollback/branch/port, live health checks, cancelling a deploy,
notification channels and the compose lifecycle (issue 17)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.helpers import Key, Server
from tests.test_admin_verbs import ok, shell_app


def runbook(server: Server, query: str) -> list[tuple[object, ...]]:
    """A query of the seed's runbook, run as an operator would: sqlite3 on data/rivetr.db."""
    with sqlite3.connect(server.data_dir / "rivetr.db") as db:
        return list(db.execute(query))


def test_the_seeds_runbook_queries_answer_on_the_database(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = shell_app(workdir / "app", alice)
    assert repo.push(server.remote("dd-runbook")).returncode == 0
    ok(server, alice, "deploy:set", "dd-runbook", "pre=echo runbook-pre; exit 7")
    repo.commit("v2")
    assert repo.push(server.remote("dd-runbook")).returncode != 0

    recent = runbook(
        server,
        "SELECT id, app_id, status, error_message FROM deployments "
        "ORDER BY created_at DESC LIMIT 5",
    )
    app_id = runbook(server, "SELECT id FROM apps WHERE name = 'dd-runbook'")[0][0]
    mine = [row for row in recent if row[1] == app_id]
    assert [row[2] for row in mine[:2]] == ["failed", "running"]
    failed_id = mine[0][0]
    assert "pre-deploy command exited with code 7" in str(mine[0][3])

    lines = runbook(
        server,
        "SELECT timestamp, message FROM deployment_logs "
        f"WHERE deployment_id = '{failed_id}' ORDER BY timestamp",
    )
    messages = [str(m) for _, m in lines]
    pre = next(i for i, m in enumerate(messages) if m.strip() == "runbook-pre")
    assert any("Deploy failed at pre_deploy" in m for m in messages)
    # ISO 8601 UTC, in the order the lines were written.
    stamps = [str(t) for t, _ in lines]
    assert all(t.endswith("Z") and t[10] == "T" for t in stamps)
    assert pre < max(i for i, m in enumerate(messages) if "Deploy failed" in m)
