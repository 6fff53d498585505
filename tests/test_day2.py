"""Day-2 operations over real SSH and the real engine: the seed's runbook queries, deploy
command lists, per-app auto-rollback/branch/port, live health checks, cancelling a deploy,
notification channels and the compose lifecycle (issue 17)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import running_server
from tests.helpers import (
    HTTPD_DOCKERFILE,
    AppRepo,
    Key,
    Server,
    docker_ids,
    read_until,
    run,
    ssh_command,
    wait_until,
)
from tests.test_admin_verbs import fails, inspect, ok, shell_app, verb
from tests.test_build_types import COMPOSE, compose_repo
from tests.test_switch import WebhookReceiver, live_then_dying


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


# --- health checks: the per-attempt timeout, and live apps (item 3) -----------------------------

# Answers at once; 0.6 s late once /tmp/slow exists; never once /tmp/hang exists.
HEALTH_CGI = """#!/bin/sh
[ -f /tmp/hang ] && sleep 600
[ -f /tmp/slow ] && sleep 0.6
echo 'Content-Type: text/plain'
echo
echo ok
"""


def health_app(path: Path, key: Key) -> AppRepo:
    repo = shell_app(path, key)
    repo.write("www/cgi-bin/health", HEALTH_CGI)
    dockerfile = (repo.path / "Dockerfile").read_text()
    chmod = "RUN chmod +x /www/cgi-bin/env"
    repo.write(
        "Dockerfile", dockerfile.replace(chmod, f"{chmod} /www/cgi-bin/health && mkdir /tmp")
    )
    repo.commit("health endpoint")
    return repo


def status_of(server: Server, app: str) -> int | None:
    """The proxy's status for the app, None when it does not answer in time."""
    try:
        return server.get(app, timeout=3)[0]
    except OSError:
        return None


def test_an_app_slower_than_the_health_timeout_fails_each_attempt(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = health_app(workdir / "app", alice)
    ok(server, alice, "apps:create", "dd-slowhealth")
    ok(
        server,
        alice,
        "checks:set",
        "dd-slowhealth",
        "path=/cgi-bin/health",
        "timeout=0.3",
        "retries=3",
    )
    # The pre-deploy command makes every answer 0.6 s late, before the health check.
    ok(server, alice, "deploy:set", "dd-slowhealth", "pre=touch /tmp/slow")
    pushed = repo.push(server.remote("dd-slowhealth"))
    assert pushed.returncode != 0, pushed.stderr
    assert "GET /cgi-bin/health failed 3 times (last: no answer within 0.3s)" in pushed.stderr
    ok(server, alice, "checks:set", "dd-slowhealth", "timeout=2")
    pushed = repo.push(server.remote("dd-slowhealth"))
    assert pushed.returncode == 0, pushed.stderr  # slow, but within the timeout
    assert server.get("dd-slowhealth") == (200, "hello v1\n")


def test_a_live_app_that_stops_answering_is_restarted_then_marked_crashed(
    docker_engine: None, keys: dict[str, Key], tmp_path: Path
) -> None:
    receiver = WebhookReceiver()
    servers = running_server(
        tmp_path / "data",
        keys,
        env={"RIVETR_CRASH_RESTART_LIMIT": "1", "RIVETR_WEBHOOK_URL": receiver.url},
    )
    srv, alice = next(servers), keys["alice"]
    try:
        repo = health_app(tmp_path / "app", alice)
        ok(srv, alice, "apps:create", "dd-hang")
        # The server checks every 30 s (the default); this app every 0.4 s.
        ok(
            srv,
            alice,
            "checks:set",
            "dd-hang",
            "path=/cgi-bin/health",
            "timeout=1",
            "live_interval=0.4",
        )
        assert repo.push(srv.remote("dd-hang")).returncode == 0
        [container] = docker_ids("ps", srv.instance, "label=rivetr.app=dd-hang")

        # Slow (0.6 s) but within the 1 s timeout: left alone.
        run(["docker", "exec", container, "touch", "/tmp/slow"])
        time.sleep(5)
        assert "live health check failed" not in srv.log()
        assert "app.unhealthy" not in receiver.events()
        assert status_of(srv, "dd-hang") == 200

        # Hangs: three failures in a row, then restarted like a crashed container.
        run(["docker", "exec", container, "touch", "/tmp/hang"])
        assert wait_until(lambda: "app.unhealthy" in receiver.events(), 30)
        assert wait_until(lambda: "restart 1 in 1s" in srv.log(), 10)
        log = srv.log()
        assert "web.1: live health check failed 3 times in a row (last: no answer within 1s)" in log
        unhealthy = next(
            json.loads(body)
            for _, body in receiver.received
            if json.loads(body)["event"] == "app.unhealthy"
        )
        assert unhealthy["app"] == "dd-hang" and "3 times in a row" in unhealthy["reason"]
        # /tmp/hang survives the restart, so it hangs again: the crash-loop rule gives up.
        assert wait_until(lambda: status_of(srv, "dd-hang") == 503, 40)
        assert "marked crashed" in srv.log()
        assert docker_ids("ps", srv.instance, "label=rivetr.app=dd-hang") == [container]
    finally:
        servers.close()
        receiver.close()


# --- deploys:cancel (item 4) -------------------------------------------------------------------


def rest_of(push: subprocess.Popen[bytes], seen: bytes) -> str:
    """The background push's whole output once it has ended."""
    assert push.stderr is not None
    rest = push.stderr.read()
    push.wait(timeout=60)
    return (seen + rest).decode(errors="replace")


def build_step_containers(marker: str) -> list[str]:
    """Containers (any state) whose command holds `marker`: a build step's, here."""
    listed = run(["docker", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}"])
    return [line.split()[0] for line in listed.stdout.splitlines() if marker in line]


def test_cancel_stops_a_running_build_and_a_waiting_restart_and_keeps_the_live_release(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = shell_app(workdir / "app", alice)
    assert repo.push(server.remote("dd-cancel")).returncode == 0
    [live] = docker_ids("ps", server.instance, "label=rivetr.app=dd-cancel")
    dockerfile = (repo.path / "Dockerfile").read_text()
    repo.write("Dockerfile", dockerfile.replace("COPY www", "RUN sleep 301.5\nCOPY www"))
    repo.commit("a build that takes five minutes")

    push = repo.start_push(server.remote("dd-cancel"))
    seen = read_until(push, b"Step 3/")  # the build runs its sleep step now
    assert wait_until(lambda: build_step_containers("sleep 301.5"), 30)
    # A restart asked for meanwhile waits behind it.
    restart = subprocess.Popen(
        [
            *ssh_command(alice.private).split(),
            "-p",
            str(server.ssh_port),
            "git@127.0.0.1",
            "ps:restart dd-cancel",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_until(lambda: len(server.statuses("dd-cancel")) == 3, 30)
    out = ok(server, alice, "deploys:cancel", "dd-cancel")
    waiting, running = out.splitlines()  # the waiting restart first, then the running build
    assert waiting.endswith("cancelled, Deploy cancelled by alice")
    assert running.endswith("cancelled, Deploy cancelled by alice (at building)")

    text = rest_of(push, seen)
    assert push.returncode != 0
    assert "Deploy cancelled by alice (at building)" in text
    restarted = restart.communicate(timeout=60)
    assert restart.returncode != 0 and "cancelled by alice" in restarted[0] + restarted[1]
    assert server.statuses("dd-cancel") == ["cancelled", "cancelled", "running"]
    assert wait_until(lambda: not build_step_containers("sleep 301.5"), 30)  # killed, removed
    assert docker_ids("ps", server.instance, "label=rivetr.app=dd-cancel") == [live]
    assert server.get("dd-cancel") == (200, "hello v1\n")
    assert repo.remote_sha(server.remote("dd-cancel")) != repo.head()  # branch put back

    # A started container is removed: cancelled during its pre-deploy command.
    repo.write("Dockerfile", dockerfile)
    repo.write("www/index.html", "v3\n")
    repo.commit("v3")
    ok(server, alice, "deploy:set", "dd-cancel", "pre=sleep 302.5")
    push = repo.start_push(server.remote("dd-cancel"))
    seen = read_until(push, b"Running pre-deploy command")
    assert len(docker_ids("ps", server.instance, "label=rivetr.app=dd-cancel")) == 2
    assert "cancelled" in ok(server, alice, "deploys:cancel", "dd-cancel")
    text = rest_of(push, seen)
    assert push.returncode != 0 and "Deploy cancelled by alice (at starting)" in text
    assert docker_ids("ps", server.instance, "label=rivetr.app=dd-cancel") == [live]
    assert server.get("dd-cancel") == (200, "hello v1\n")
    assert "no deploy of dd-cancel is waiting or running" in fails(
        server, alice, "deploys:cancel", "dd-cancel"
    )
    with sqlite3.connect(server.data_dir / "rivetr.db") as db:
        assert db.execute(
            "SELECT status, cancelled_by FROM deployments WHERE app_id = "
            "(SELECT id FROM apps WHERE name = 'dd-cancel') ORDER BY id DESC LIMIT 1"
        ).fetchone() == ("cancelled", "alice")


# --- notification channels (item 5) ------------------------------------------------------------


class Mailbox:
    """A real SMTP server (aiosmtpd) on a free loopback port; what it was sent, as text."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        messages: list[str] = []

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
                messages.append(envelope.content.decode(errors="replace"))
                return "250 OK"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.messages = messages
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def close(self) -> None:
        self._controller.stop()


class PathReceiver(WebhookReceiver):
    """A WebhookReceiver that also notes the path each POST went to."""

    def __init__(self) -> None:
        super().__init__()
        handler = self.server.RequestHandlerClass
        received = self.received

        class ByPath(handler):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({**dict(self.headers), "Path": self.path}, body))
                self.send_response(200)
                self.end_headers()

        self.server.RequestHandlerClass = ByPath


def bodies(receiver: WebhookReceiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(body) for headers, body in receiver.received if headers.get("Path") == path]


def test_channels_email_and_http_get_the_events_and_keep_their_secrets(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice, bob = keys["alice"], keys["bob"]
    mailbox, receiver = Mailbox(), PathReceiver()
    hook = receiver.url.rsplit("/", 1)[0]  # http://127.0.0.1:PORT
    try:
        ok(server, alice, "apps:create", "dd-notify")
        mail = (
            f"mailto://127.0.0.1:{mailbox.port}?from=rivetr@example.com&to=ops@example.com"
            "&mode=insecure"
        )
        added = ok(server, alice, "notify:add", "dd-notify", mail, "--events", "deploy.succeeded")
        assert "channel #" in added and "deploy.succeeded" in added
        secret_json = hook.replace("http://", "json://user:s3cretpw@") + "/apprise"
        ok(server, alice, "notify:add", "dd-notify", secret_json)
        ok(server, alice, "notify:add", "dd-notify", f"{hook}/signed")  # rivetr's own kind
        ok(server, alice, "notify:add", "dd-notify", "json://127.0.0.1:9/nobody-listens")
        listed = ok(server, alice, "notify:list", "dd-notify")
        assert "s3cretpw" not in listed and "json://user:****@127.0.0.1" in listed
        assert len(listed.splitlines()) == 4
        with sqlite3.connect(server.data_dir / "rivetr.db") as db:
            stored = b"".join(bytes(r[0]) for r in db.execute("SELECT url FROM notify_channels"))
        assert b"s3cretpw" not in stored and b"127.0.0.1" not in stored  # encrypted at rest

        assert "admin keys" in fails(server, bob, "notify:add", f"{hook}/everything")
        assert "--events" in fails(server, alice, "notify:add", "dd-notify", mail, "--events", "x")
        assert "no channel kind" in fails(server, alice, "notify:add", "dd-notify", "bogus://x")

        repo = AppRepo(workdir / "app", alice)
        pushed = repo.push(server.remote("dd-notify"))
        assert pushed.returncode == 0, pushed.stderr  # the dead channel holds nothing up
        assert wait_until(lambda: mailbox.messages, 20)
        assert "dd-notify: deploy #" in mailbox.messages[0] and "is live" in mailbox.messages[0]
        assert "Subject: rivetr-git: deploy.succeeded" in mailbox.messages[0]
        assert wait_until(lambda: len(bodies(receiver, "/apprise")) >= 2, 20)
        assert any("is live" in b["message"] for b in bodies(receiver, "/apprise"))
        assert wait_until(lambda: len(bodies(receiver, "/signed")) >= 2, 20)
        signed = [b["event"] for b in bodies(receiver, "/signed")]
        assert signed[:2] == ["deploy.started", "deploy.succeeded"]
        assert len(mailbox.messages) == 1  # --events: only deploy.succeeded

        tested = verb(server, alice, "notify:test", "dd-notify", timeout=120)
        assert tested.returncode == 1  # the dead one failed, and says so
        assert tested.stdout.count("sent") == 3 and "FAILED" in tested.stdout
        assert wait_until(lambda: len(mailbox.messages) == 2, 10)
        last = ok(server, alice, "notify:list", "dd-notify").splitlines()[-1]
        ok(server, alice, "notify:remove", "dd-notify", last.split()[0])
        assert len(ok(server, alice, "notify:list", "dd-notify").splitlines()) == 3
    finally:
        mailbox.close()
        receiver.close()


def test_an_automatic_rollback_sends_deploy_rolled_back_to_the_channels(
    watched_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv, alice = watched_server, keys["alice"]
    receiver = WebhookReceiver()
    try:
        repo, _ = live_then_dying(srv, alice, tmp_path / "app", "dd-rolled")
        url = receiver.url.replace("http://", "json://")
        ok(srv, alice, "notify:add", url, "--events", "deploy.rolled_back")  # server-wide
        assert repo.push(srv.remote("dd-rolled")).returncode == 0
        assert wait_until(lambda: receiver.received, 30)
        [message] = [json.loads(body) for _, body in receiver.received]
        assert message["title"] == "rivetr-git: deploy.rolled_back"
        assert message["message"].startswith("dd-rolled: rolled back to deploy #1")
    finally:
        receiver.close()


# --- the compose lifecycle (item 6) ------------------------------------------------------------


def live_group(server: Server, app: str) -> tuple[str, list[str]]:
    """The live deployment's id and the containers of its group."""
    live = next(
        line.split()[0][1:]
        for line in server.cli("deploys", "list", app).stdout.splitlines()[1:]
        if line.split()[1] == "running"
    )
    return live, docker_ids("ps", server.instance, f"label=rivetr.deployment={live}")


def test_compose_groups_take_config_limits_restart_and_rollback(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = compose_repo(workdir / "group", alice, COMPOSE)
    assert repo.push(server.remote("dd-compose")).returncode == 0
    first, group = live_group(server, "dd-compose")
    assert len(group) == 2  # web and worker
    assert server.get("dd-compose", "/cgi-bin/env") == (200, "from-compose 5000\n")

    # config:set: a new group from the same images, health-checked and switched.
    out = ok(server, alice, "config:set", "dd-compose", "GREETING=from-config")
    assert "Restarting dd-compose" in out and "Running:" in out
    second, group = live_group(server, "dd-compose")
    assert second != first and len(group) == 2
    assert server.get("dd-compose", "/cgi-bin/env") == (200, "from-config 5000\n")
    images = {inspect(c)["Config"]["Image"] for c in group}  # type: ignore[index]
    assert images == {
        f"rivetr-{server.instance}/dd-compose:{first}",
        f"rivetr-{server.instance}/dd-compose:{first}-worker",
    }  # nothing rebuilt
    # The old group is drained and removed, both services.
    assert wait_until(
        lambda: not docker_ids("ps", server.instance, f"label=rivetr.deployment={first}"), 30
    )

    # limits:set reaches every service of the group.
    ok(server, alice, "limits:set", "dd-compose", "memory=256m", "cpu=0.5")
    third, group = live_group(server, "dd-compose")
    assert third != second and len(group) == 2
    for container in group:
        config = inspect(container)["HostConfig"]
        assert config["Memory"] == 256 * 1024**2 and config["NanoCpus"] == 500_000_000  # type: ignore[index]

    ok(server, alice, "ps:restart", "dd-compose")
    fourth, group = live_group(server, "dd-compose")
    assert fourth != third and len(group) == 2
    ok(server, alice, "config:unset", "dd-compose", "GREETING")
    assert server.get("dd-compose", "/cgi-bin/env") == (200, "from-compose 5000\n")

    # rollback starts the earlier group's images (with that release's env).
    repo.write("app/www/index.html", "hello v2\n")
    repo.commit("v2")
    assert repo.push(server.remote("dd-compose")).returncode == 0
    assert server.get("dd-compose") == (200, "hello v2\n")
    back = ok(server, alice, "rollback", "dd-compose", first)
    assert "Rolling back dd-compose" in back
    assert server.get("dd-compose") == (200, "hello v1\n")
    assert server.get("dd-compose", "/cgi-bin/env") == (200, "from-compose 5000\n")
    _, group = live_group(server, "dd-compose")
    assert len(group) == 2
