"""End to end: what happens around the route switch: draining and automatic rollback."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rivetr_git.notify import verify
from tests.conftest import running_server
from tests.helpers import (
    HTTPD_DOCKERFILE,
    SHELL_DOCKERFILE_HEAD,
    AppRepo,
    Key,
    Server,
    docker_ids,
    run,
    ssh_command,
    wait_until,
)

CGI_APP = (
    SHELL_DOCKERFILE_HEAD
    + """\
COPY www /www
RUN chmod +x /www/cgi-bin/slow
CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]
"""
)
SLOW_CGI = "#!/bin/sh\nsleep 3\necho 'Content-Type: text/plain'\necho\necho 'slow {version}'\n"


@pytest.fixture
def watched_server(docker_engine: None, tmp_path: Path, keys: dict[str, Key]) -> Iterator[Server]:
    yield from running_server(tmp_path / "data", keys, env={"RIVETR_WATCH_WINDOW": "6"})


def cgi_repo(path: Path, key: Key, version: str) -> AppRepo:
    repo = AppRepo(path, key, CGI_APP)
    (repo.path / "www" / "cgi-bin").mkdir()
    repo.write("www/cgi-bin/slow", SLOW_CGI.format(version=version))
    repo.write("www/index.html", f"{version}\n")
    repo.commit(version)
    return repo


DYING_V2 = (
    SHELL_DOCKERFILE_HEAD + "COPY www /www\n"
    'CMD ["sh", "-c", "httpd -f -p 5000 -h /www & sleep 2; exit 3"]\n'
)


def live_then_dying(srv: Server, key: Key, path: Path, app: str) -> tuple[AppRepo, str]:
    """`app` live at v1; a v2 that serves, then dies after two seconds, committed (not yet
    pushed). Returns the repo and v1's container."""
    repo = AppRepo(path, key)
    assert repo.push(srv.remote(app)).returncode == 0
    [v1_container] = docker_ids("ps", srv.instance, f"label=rivetr.app={app}")
    repo.write("Dockerfile", DYING_V2)
    repo.write("www/index.html", "v2\n")
    repo.commit("v2 dies after two seconds")
    return repo, v1_container


def test_slow_request_in_flight_across_the_switch_completes(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = cgi_repo(workdir / "app", keys["alice"], "v1")
    assert repo.push(server.remote("drainer")).returncode == 0
    slow: dict[str, tuple[int, str]] = {}
    request = threading.Thread(
        target=lambda: slow.__setitem__("r", server.get("drainer", "/cgi-bin/slow", timeout=20))
    )
    request.start()
    time.sleep(0.5)  # the request is now in the v1 container
    repo.write("www/index.html", "v2\n")
    repo.commit("v2")
    result = repo.push(server.remote("drainer"))
    assert result.returncode == 0, result.stderr
    assert server.get("drainer") == (200, "v2\n")
    request.join(timeout=30)
    assert slow["r"] == (200, "slow v1\n")  # finished by the old release, not cut off


def test_crash_inside_the_watch_window_rolls_back(
    watched_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv = watched_server
    repo, v1_container = live_then_dying(srv, keys["alice"], tmp_path / "app", "flaky")
    result = repo.push(srv.remote("flaky"))
    assert result.returncode == 0, result.stderr  # it was live when the push ended
    assert "watching it for 6s" in result.stderr
    assert srv.get("flaky") == (200, "v2\n")
    assert wait_until(lambda: srv.get("flaky") == (200, "hello v1\n"), 15)
    rows = srv.cli("deploys", "list", "flaky").stdout.splitlines()[1:]
    assert rows[0].split()[1] == "failed" and "rolled back to #1" in rows[0]
    assert rows[1].split()[1] == "running"
    # v1's container served again (reused, not restarted); v2's is gone.
    wait_until(lambda: len(docker_ids("ps", srv.instance, "label=rivetr.app=flaky")) == 1, 10)
    assert docker_ids("ps", srv.instance, "label=rivetr.app=flaky") == [v1_container]


def test_healthy_release_retires_the_previous_one_after_the_window(
    watched_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv = watched_server
    repo = AppRepo(tmp_path / "app", keys["alice"])
    assert repo.push(srv.remote("steady")).returncode == 0
    [v1_container] = docker_ids("ps", srv.instance, "label=rivetr.app=steady")
    repo.write("www/index.html", "v2\n")
    repo.commit("v2")
    assert repo.push(srv.remote("steady")).returncode == 0
    time.sleep(2)
    # Still there during the window (so a rollback is instant), without traffic.
    assert v1_container in docker_ids("ps", srv.instance, "label=rivetr.app=steady")
    assert wait_until(lambda: v1_container not in docker_ids("ps", srv.instance), 20)
    assert srv.get("steady") == (200, "v2\n")


class WebhookReceiver:
    """A real HTTP server on loopback that records what it is sent."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], bytes]] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [json.loads(body)["event"] for _, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_gets_signed_deploy_events(
    docker_engine: None, keys: dict[str, Key], tmp_path: Path
) -> None:
    receiver = WebhookReceiver()
    servers = running_server(
        tmp_path / "data",
        keys,
        env={"RIVETR_WEBHOOK_URL": receiver.url, "RIVETR_WEBHOOK_SECRET": "s3cret"},
    )
    srv = next(servers)
    try:
        repo = AppRepo(tmp_path / "app", keys["alice"])
        assert repo.push(srv.remote("hooked")).returncode == 0
        repo.write("Dockerfile", "FROM scratch\nCOPY missing /x\n")
        repo.commit("broken")
        assert repo.push(srv.remote("hooked")).returncode != 0
        wait_until(lambda: len(receiver.received) >= 4, 10)
        assert receiver.events() == [
            "deploy.started",
            "deploy.succeeded",
            "deploy.started",
            "deploy.failed",
        ]
        for headers, body in receiver.received:
            assert verify("s3cret", body, headers["X-Rivetr-Signature"])
            assert json.loads(body)["app"] == "hooked"
        failed = json.loads(receiver.received[3][1])
        assert failed["stage"] == "building" and failed["commit"] == repo.head()
    finally:
        servers.close()
        receiver.close()


def test_crashing_live_app_is_restarted_with_backoff_then_marked_crashed(
    docker_engine: None, keys: dict[str, Key], tmp_path: Path
) -> None:
    receiver = WebhookReceiver()
    servers = running_server(
        tmp_path / "data",
        keys,
        env={"RIVETR_CRASH_RESTART_LIMIT": "2", "RIVETR_WEBHOOK_URL": receiver.url},
    )
    srv = next(servers)
    try:
        # Serves for a second and a half after every start, then dies.
        repo = AppRepo(
            tmp_path / "app",
            keys["alice"],
            SHELL_DOCKERFILE_HEAD
            + "COPY www /www\n"
            + 'CMD ["sh", "-c", "httpd -f -p 5000 -h /www & sleep 1.5; exit 4"]\n',
        )
        assert repo.push(srv.remote("crashloop")).returncode == 0
        [container] = docker_ids("ps", srv.instance, "label=rivetr.app=crashloop")
        seen_up_again = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, _ = srv.get("crashloop")
            if status == 503:
                break
            if status == 200 and "restart 1 in 1s" in srv.log():
                seen_up_again = True
            time.sleep(0.1)
        assert status == 503
        assert seen_up_again  # restarted (and served) before giving up
        log = srv.log()
        assert "restart 1 in 1s" in log and "restart 2 in 2s" in log
        assert "marked crashed" in log
        # The same container was restarted, not replaced.
        assert docker_ids("ps", srv.instance, "label=rivetr.app=crashloop") == [container]
        assert wait_until(lambda: "container.crashed" in receiver.events(), 5)
        # After a restart of the daemon it stays crashed (503), without restarts.
        srv.stop()
        srv.start()
        assert srv.get("crashloop")[0] == 503
        # A good deploy clears it.
        repo.write("Dockerfile", HTTPD_DOCKERFILE)
        repo.commit("fixed")
        assert repo.push(srv.remote("crashloop")).returncode == 0
        assert srv.get("crashloop") == (200, "hello v1\n")
    finally:
        servers.close()
        receiver.close()


def ssh_command_line(srv: Server, key: Key, command: str) -> subprocess.CompletedProcess[str]:
    argv = [*ssh_command(key.private).split(), "-p", str(srv.ssh_port), "git@127.0.0.1", command]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_releases_and_rollback_over_ssh_and_cli(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("rewind")).returncode == 0
    repo.write("www/index.html", "v2\n")
    repo.commit("v2")
    assert repo.push(server.remote("rewind")).returncode == 0
    ids = [
        line.split()[0] for line in server.cli("deploys", "list", "rewind").stdout.splitlines()[1:]
    ]  # newest first
    v2, v1 = ids[0], ids[1]

    listed = ssh_command_line(server, keys["alice"], "releases rewind")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].startswith(f"* {v2}")
    assert f"  {v1}" in listed.stdout

    back = ssh_command_line(server, keys["alice"], "rollback rewind")
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"Rolling back rewind to release {v1}" in back.stdout
    assert "-----> Running:" in back.stdout
    assert "Building" not in back.stdout  # the release's image runs again, no rebuild
    assert server.get("rewind") == (200, "hello v1\n")
    rows = server.cli("deploys", "list", "rewind").stdout.splitlines()[1:]
    assert rows[0].split()[1] == "running" and rows[1].split()[1] == "replaced"

    # The same from the server's own CLI, to a numbered release.
    forward = server.cli("rollback", "rewind", v2.lstrip("#"), check=False)
    assert forward.returncode == 0, forward.stdout + forward.stderr
    assert server.get("rewind") == (200, "v2\n")
    assert server.cli("releases", "rewind").stdout.splitlines()[0].startswith("*")

    missing = ssh_command_line(server, keys["alice"], "rollback rewind 9999")
    assert missing.returncode != 0 and "no release #9999" in missing.stderr
    live = server.cli("releases", "rewind").stdout.splitlines()[0].split()[1]
    same = ssh_command_line(server, keys["alice"], f"rollback rewind {live}")
    assert same.returncode != 0 and "already live" in same.stderr
    # A developer key without a grant sees no such app.
    bob = ssh_command_line(server, keys["bob"], "releases rewind")
    assert bob.returncode != 0 and "app 'rewind' does not exist" in bob.stderr
    assert server.get("rewind") == (200, "v2\n")


def test_rollback_starts_the_previous_release_from_its_image_when_its_container_is_gone(
    watched_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv = watched_server
    repo, v1_container = live_then_dying(srv, keys["alice"], tmp_path / "app", "phoenix2")
    assert repo.push(srv.remote("phoenix2")).returncode == 0
    run(["docker", "rm", "-f", v1_container])  # the previous release's container vanishes
    assert wait_until(lambda: srv.get("phoenix2") == (200, "hello v1\n"), 20)
    rows = srv.cli("deploys", "list", "phoenix2").stdout.splitlines()[1:]
    assert rows[0].split()[1] == "running"  # the rollback, recorded as a deployment
    assert "rolling back to #1 from its image" in rows[1]
    wait_until(lambda: len(docker_ids("ps", srv.instance, "label=rivetr.app=phoenix2")) == 1, 15)
    [container] = docker_ids("ps", srv.instance, "label=rivetr.app=phoenix2")
    assert container != v1_container


def test_a_failed_auto_rollback_leaves_the_app_marked_crashed_not_half_routed(
    watched_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv = watched_server
    repo, v1_container = live_then_dying(srv, keys["alice"], tmp_path / "app", "doomed")
    assert repo.push(srv.remote("doomed")).returncode == 0
    # The previous release vanishes entirely: container and image.
    run(["docker", "rm", "-f", v1_container])
    run(["docker", "rmi", "-f", f"rivetr-{srv.instance}/doomed:1"])
    assert wait_until(lambda: srv.get("doomed")[0] == 503, 20)
    assert "keeps crashing" in srv.get("doomed")[1]
    info = srv.cli("apps", "show", "doomed").stdout
    assert "the rollback to #1 failed too" in info, info
    srv.stop()
    srv.start()  # the state is in the database, not only in the route table
    assert srv.get("doomed")[0] == 503


def test_rollback_runs_the_release_with_the_port_it_had(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("ported")).returncode == 0  # listens on 5000
    repo.write(
        "Dockerfile", HTTPD_DOCKERFILE.replace("EXPOSE 5000\n", "").replace('"5000"', '"7000"')
    )
    repo.write("www/index.html", "v2\n")
    repo.commit("v2 on 7000")
    server.cli("apps", "set", "ported", "port=7000")
    assert repo.push(server.remote("ported")).returncode == 0
    back = server.cli("rollback", "ported", check=False)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "listening on port 5000" in back.stdout
    assert server.get("ported") == (200, "hello v1\n")


def test_health_failure_inside_the_watch_window_rolls_back(
    watched_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv = watched_server
    repo = AppRepo(tmp_path / "app", keys["alice"])
    assert repo.push(srv.remote("hangs")).returncode == 0
    # Answers for two seconds, then stops answering but keeps running.
    repo.write(
        "Dockerfile",
        SHELL_DOCKERFILE_HEAD + "COPY www /www\n"
        'CMD ["sh", "-c", "httpd -f -p 5000 -h /www & sleep 2; kill $!; sleep 600"]\n',
    )
    repo.write("www/index.html", "v2\n")
    repo.commit("v2 stops answering")
    assert repo.push(srv.remote("hangs")).returncode == 0
    assert wait_until(lambda: srv.get("hangs") == (200, "hello v1\n"), 15)
    rows = srv.cli("deploys", "list", "hangs").stdout.splitlines()[1:]
    assert "health check failed within the watch window" in rows[0]
