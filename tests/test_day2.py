"""Day-2 operations over real SSH and the real engine: the seed's runbook queries, deploy
command lists, per-app auto-rollback/branch/port, live health checks, cancelling a deploy,
notification channels and the compose lifecycle (issue 17)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.helpers import HTTPD_DOCKERFILE, AppRepo, Key, Server
from tests.test_admin_verbs import fails, ok, shell_app
from tests.test_switch import live_then_dying


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


# --- deploy commands, auto-rollback, branch and port per app (item 2) ---------------------------


def test_deploy_command_lists_run_in_order_and_the_first_failing_pre_stops_the_deploy(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = shell_app(workdir / "app", alice)
    assert repo.push(server.remote("dd-cmds")).returncode == 0
    ok(
        server,
        alice,
        "deploy:set",
        "dd-cmds",
        "pre=echo first-pre",
        "pre=echo second-pre; exit 5",
        "pre=echo third-pre",
    )
    info = ok(server, alice, "apps:info", "dd-cmds")
    assert "'echo first-pre' ; then 'echo second-pre; exit 5' ; then 'echo third-pre'" in info
    repo.write("www/index.html", "v2\n")
    repo.commit("v2")
    pushed = repo.push(server.remote("dd-cmds"))
    assert pushed.returncode != 0
    out = pushed.stderr
    assert "Running pre-deploy command 1/3: echo first-pre" in out
    assert "first-pre" in out and "second-pre" in out and "third-pre" not in out
    assert "pre-deploy command done in " in out  # each one's duration
    assert "pre-deploy command failed after " in out
    assert "not running the 1 pre-deploy command(s) after it" in out
    assert "Deploy failed at pre_deploy: 2/3: pre-deploy command exited with code 5" in out
    assert server.get("dd-cmds") == (200, "hello v1\n")

    # The app's own list cleared: rivetr.toml's [deploy] lists run (a string is a list of one).
    ok(server, alice, "deploy:set", "dd-cmds", "pre=")
    repo.write(
        "rivetr.toml",
        '[deploy]\npre = ["echo toml-pre-a", "echo toml-pre-b"]\npost = "echo toml-post"\n',
    )
    repo.commit("toml commands")
    pushed = repo.push(server.remote("dd-cmds"))
    assert pushed.returncode == 0, pushed.stderr
    out = pushed.stderr
    assert out.index("toml-pre-a") < out.index("toml-pre-b") < out.index("toml-post")
    assert "Running post-deploy command: echo toml-post" in out
    assert server.get("dd-cmds") == (200, "v2\n")

    repo.write("rivetr.toml", '[deploy]\npre = [1, "x"]\n')
    repo.commit("bad toml")
    pushed = repo.push(server.remote("dd-cmds"))
    assert pushed.returncode != 0 and "[deploy] pre = [1, 'x']: give a command" in pushed.stderr


def test_a_per_app_branch_and_port_set_over_ssh_deploy_end_to_end(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = AppRepo(
        workdir / "app",
        alice,
        HTTPD_DOCKERFILE.replace("5000", "8123").replace("EXPOSE 8123\n", ""),
    )
    ok(server, alice, "apps:create", "dd-branch")
    out = ok(server, alice, "deploy:set", "dd-branch", "branch=production", "port=8123")
    assert "deploy of dd-branch updated" in out
    pushed = repo.push(server.remote("dd-branch"), "main")
    assert pushed.returncode == 0 and "not deployed" in pushed.stderr
    assert server.statuses("dd-branch") == []
    pushed = repo.push(server.remote("dd-branch"), "main:production")
    assert pushed.returncode == 0, pushed.stderr
    assert "listening on port 8123" in pushed.stderr
    assert server.get("dd-branch") == (200, "hello v1\n")
    assert "deploy branch:  production" in ok(server, alice, "apps:info", "dd-branch")
    assert "branch=" in fails(server, alice, "deploy:set", "dd-branch", "branch=-x")
    assert "auto_rollback=" in fails(server, alice, "deploy:set", "dd-branch", "auto_rollback=hm")


@pytest.fixture
def watched_server(docker_engine: None, tmp_path: Path, keys: dict[str, Key]) -> Iterator[Server]:
    yield from running_server(tmp_path / "data", keys, env={"RIVETR_WATCH_WINDOW": "5"})


def test_auto_rollback_off_for_one_app_keeps_a_failing_release(
    watched_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv, alice = watched_server, keys["alice"]
    repo, _ = live_then_dying(srv, alice, tmp_path / "app", "dd-norollback")
    ok(srv, alice, "deploy:set", "dd-norollback", "auto_rollback=false")
    assert "auto-rollback:  False" in ok(srv, alice, "apps:info", "dd-norollback")
    result = repo.push(srv.remote("dd-norollback"))
    assert result.returncode == 0, result.stderr
    assert "watching it for" not in result.stderr
    time.sleep(8)  # past the window: with auto-rollback on, v1 would be back by now
    statuses = srv.statuses("dd-norollback")
    assert statuses[:2] == ["running", "replaced"], statuses
    assert "rolled back" not in srv.cli("deploys", "list", "dd-norollback").stdout
