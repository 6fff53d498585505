"""End to end: Procfile process types, the release phase, and what a bad Procfile gets.

Real daemon, real git over SSH, real containers. App names start with `pr`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_podman
from tests.conftest import running_server
from tests.helpers import SHELL_DOCKERFILE_HEAD, AppRepo, Key, Server, docker_ids, run, wait_until
from tests.test_switch import ssh_command_line

# The Podman daemon of tests/test_podman.py, for the scaling test on Podman.
podman_server = test_podman.podman_server
on_podman = test_podman.on_podman

SHELL_HTTPD = (
    SHELL_DOCKERFILE_HEAD
    + """\
COPY www /www
EXPOSE 5000
CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]
"""
)


def procfile_repo(path: Path, key: Key, procfile: str) -> AppRepo:
    repo = AppRepo(path, key, SHELL_HTTPD)
    repo.write("Procfile", procfile)
    repo.commit("with a Procfile")
    return repo


def containers(server: Server, app: str, process: str, running: bool = True) -> list[str]:
    """Ids of the app's containers running process `process` (e.g. worker.1).

    One `docker ps` call: listing and then inspecting raced a retired container's
    removal ("No such object")."""
    out = run(
        [
            "docker",
            "ps",
            "-a",
            "--format",
            "{{.ID}} {{.State}}",
            "--filter",
            f"label=rivetr.instance={server.instance}",
            "--filter",
            f"label=rivetr.app={app}",
            "--filter",
            f"label=rivetr.process={process}",
        ]
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [cid for cid, state in rows if state == "running" or not running]


def docker_logs(container: str) -> str:
    result = run(["docker", "logs", container], check=False)
    return result.stdout + result.stderr


def test_worker_runs_beside_web_and_release_runs_first(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    app = "prwork"
    repo = procfile_repo(
        workdir / "app",
        keys["alice"],
        "# processes\n"
        "web: httpd -f -p $PORT -h /www\n"
        "worker: i=0; while true; do i=$((i+1)); echo worker-tick-$i; sleep 0.2; done\n"
        "release: echo release-ran-in-$HOSTNAME\n",
    )
    pushed = repo.push(server.remote(app))
    assert pushed.returncode == 0, pushed.stderr
    out = pushed.stderr
    assert "Procfile: process types web, worker, release" in out
    # The release phase runs after the build and before anything starts.
    assert out.index("Building...") < out.index("-----> Release phase...")
    assert out.index("-----> Release phase...") < out.index("-----> Starting...")
    assert "release-ran-in-" in out
    assert server.get(app) == (200, "hello v1\n")
    workers = containers(server, app, "worker.1")
    assert len(workers) == 1, workers
    assert wait_until(lambda: "worker-tick-3" in docker_logs(workers[0]), 10)
    assert containers(server, app, "web.1")
    # `logs` shows every process of the release, each line after its process's name.
    logs = ssh_command_line(server, keys["alice"], f"logs {app} -n 5")
    assert logs.returncode == 0, logs.stderr
    assert re.search(r"^worker\.1 \| worker-tick-\d+$", logs.stdout, re.M), logs.stdout
    # `enter` reaches a worker, not only web.1.
    inside = ssh_command_line(server, keys["alice"], f"enter {app} worker.1 cat /proc/1/cmdline")
    assert inside.returncode == 0 and "worker-tick" in inside.stdout, inside
    missing = ssh_command_line(server, keys["alice"], f"enter {app} clock.1")
    assert "has no process clock.1; it runs web.1, worker.1" in missing.stderr, missing
    # No one-off release container is left behind.
    assert not [
        c for c in docker_ids("ps", server.instance, "label=rivetr.oneoff=1") if c in workers
    ]

    # The next deploy starts a new worker and retires the old one (SIGTERM, stop_timeout).
    repo.write("www/index.html", "hello v2\n")
    repo.commit("v2")
    pushed = repo.push(server.remote(app))
    assert pushed.returncode == 0, pushed.stderr
    assert server.get(app) == (200, "hello v2\n")
    assert wait_until(lambda: workers[0] not in containers(server, app, "worker.1", False), 15)
    fresh = containers(server, app, "worker.1")
    assert len(fresh) == 1 and fresh[0] != workers[0]


def test_failing_release_fails_the_push_and_changes_nothing(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    app = "prrelease"
    repo = procfile_repo(workdir / "app", keys["alice"], "web: httpd -f -p $PORT -h /www\n")
    assert repo.push(server.remote(app)).returncode == 0
    good = repo.head()
    live = containers(server, app, "web.1")
    # The release command gets the app's env.
    set_env = ssh_command_line(server, keys["alice"], f"config:set {app} PROBE=v42 --no-restart")
    assert set_env.returncode == 0, set_env.stderr
    repo.write(
        "Procfile", "web: httpd -f -p $PORT -h /www\nrelease: echo migrating-$PROBE; exit 3\n"
    )
    repo.write("www/index.html", "hello v2\n")
    repo.commit("a release that fails")
    pushed = repo.push(server.remote(app))
    assert pushed.returncode != 0
    out = pushed.stderr
    assert "-----> Release phase..." in out
    assert "migrating-v42" in out
    assert "Deploy failed at release: the release command exited with code 3" in out
    assert "-----> Starting..." not in out  # nothing of the new release started
    assert server.get(app) == (200, "hello v1\n")
    assert containers(server, app, "web.1") == live
    assert repo.remote_sha(server.remote(app)) == good
    assert server.statuses(app)[0] == "failed"


def test_bad_procfile_line_is_named(server: Server, keys: dict[str, Key], workdir: Path) -> None:
    app = "prbadline"
    repo = procfile_repo(
        workdir / "app",
        keys["alice"],
        "web: httpd -f -p $PORT -h /www\n\nWorker Two: sleep 100\n",
    )
    pushed = repo.push(server.remote(app))
    assert pushed.returncode != 0
    assert "Deploy failed at cloning: Procfile line 3: process type 'Worker Two'" in pushed.stderr
    assert "lower-case letter" in pushed.stderr
    assert not docker_ids("images", server.instance) or all(
        f"/{app}:" not in t for t in docker_ids("images", server.instance)
    )


HOSTNAME_CGI = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nhostname\n"
SCALED_APP = (
    SHELL_DOCKERFILE_HEAD
    + """\
COPY www /www
RUN chmod +x /www/cgi-bin/host
EXPOSE 5000
CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]
"""
)


def hostnames(server: Server, app: str, n: int) -> set[str]:
    seen = set()
    for _ in range(n):
        status, body = server.get(app, "/cgi-bin/host")
        assert status == 200, body
        seen.add(body.strip())
    return seen


def test_scale_spreads_requests_survives_a_killed_replica_and_is_kept(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    app = "prscale"
    repo = AppRepo(workdir / "app", keys["alice"], SCALED_APP)
    (repo.path / "www" / "cgi-bin").mkdir()
    repo.write("www/cgi-bin/host", HOSTNAME_CGI)
    repo.write("Procfile", "web: httpd -f -p $PORT -h /www\nworker: sleep 1000\n")
    repo.commit("scalable")
    pushed = repo.push(server.remote(app))
    assert pushed.returncode == 0, pushed.stderr
    assert len(hostnames(server, app, 5)) == 1

    def ssh(command: str) -> str:
        done = ssh_command_line(server, keys["alice"], command)
        assert done.returncode == 0, done.stderr
        return done.stdout

    listing = ssh(f"ps {app}")
    assert listing.splitlines()[0].split() == ["PROCESS", "RELEASE", "STATE", "UPTIME", "RESTARTS"]
    assert [line.split()[0] for line in listing.splitlines()[1:]] == ["web.1", "worker.1"]

    # Wrong input is refused with what would do, and changes nothing.
    for bad, said in (
        (
            f"ps:scale {app} clock=1",
            "has no process type 'clock'; its live release runs web, worker",
        ),
        (f"ps:scale {app} web=0", f"ps:stop {app} stops it"),
        (f"ps:scale {app} web=three", "is not TYPE=N"),
        (f"ps:scale {app} web=21", "at most 20 containers per type"),
    ):
        refused = ssh_command_line(server, keys["alice"], bad)
        assert refused.returncode != 0 and said in refused.stderr, refused.stderr

    scaled = ssh_command_line(server, keys["alice"], f"ps:scale {app} web=3 worker=0")
    assert scaled.returncode == 0, scaled.stderr
    assert "scale of prscale: web=3 worker=0" in scaled.stdout + scaled.stderr
    # The replaced release shows until it has drained and stopped.
    assert wait_until(lambda: len(ssh(f"ps {app}").splitlines()) == 4, 15)
    listing = ssh(f"ps {app}")
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert [r[0] for r in rows] == ["web.1", "web.2", "web.3"], listing
    assert len({r[1] for r in rows}) == 1 and all(r[2] == "up" for r in rows)
    assert len(hostnames(server, app, 30)) == 3

    # Kill one web container while requests keep coming: none fails.
    victims = containers(server, app, "web.2")
    assert len(victims) == 1
    failures: list[object] = []
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status, body = server.get(app, "/cgi-bin/host")
            except OSError as exc:
                failures.append(exc)
                continue
            if status != 200:
                failures.append((status, body))
            answered[0] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    run(["docker", "kill", victims[0]])
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    assert failures == [] and answered[0] > 50, (failures[:3], answered[0])
    # The monitor restarts the killed container on its own; the proxy uses it again.
    assert wait_until(
        lambda: any(
            r.split()[:3] == ["web.2", rows[0][1], "up"] and r.split()[4] == "1"
            for r in ssh(f"ps {app}").splitlines()
        ),
        20,
    ), ssh(f"ps {app}")
    assert wait_until(lambda: len(hostnames(server, app, 12)) == 3, 10)

    # The scale is kept for the next deploy.
    repo.write("www/index.html", "hello v2\n")
    repo.commit("v2")
    pushed = repo.push(server.remote(app))
    assert pushed.returncode == 0, pushed.stderr
    assert server.get(app) == (200, "hello v2\n")
    assert len(hostnames(server, app, 30)) == 3
    assert not containers(server, app, "worker.1")

    # ps:stop stops every container of the release; ps:start brings all of them back.
    # (Once the watch window is over: a stop inside it reads as a crash and rolls back.)
    assert wait_until(lambda: len(ssh(f"ps {app}").splitlines()) == 4, 15)
    ssh(f"ps:stop {app}")
    assert server.get(app)[0] == 503
    assert all(r.split()[2] == "exited" for r in ssh(f"ps {app}").splitlines()[1:])
    ssh(f"ps:start {app}")
    assert len(hostnames(server, app, 30)) == 3


@pytest.fixture
def nginx_server(docker_engine: None, tmp_path: Path, keys: dict[str, Key]) -> Iterator[Server]:
    yield from running_server(tmp_path / "data", keys, env={"RIVETR_PROXY_BACKEND": "nginx"})


def test_nginx_data_plane_spreads_over_every_web_container(
    nginx_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv, app = nginx_server, "prnginx"
    repo = AppRepo(tmp_path / "app", keys["alice"], SCALED_APP)
    (repo.path / "www" / "cgi-bin").mkdir()
    repo.write("www/cgi-bin/host", HOSTNAME_CGI)
    repo.commit("scalable")
    pushed = repo.push(srv.remote(app))
    assert pushed.returncode == 0, pushed.stderr
    scaled = ssh_command_line(srv, keys["alice"], f"ps:scale {app} web=3")
    assert scaled.returncode == 0, scaled.stderr
    assert len(hostnames(srv, app, 30)) == 3
    victim = containers(srv, app, "web.3")[0]
    run(["docker", "kill", victim])
    # nginx passes a refused connection on to the next container: no request fails.
    assert len(hostnames(srv, app, 20)) >= 2


def test_processes_and_scale_on_podman(
    on_podman: Server, keys: dict[str, Key], workdir: Path
) -> None:
    app = "prpodman"
    repo = AppRepo(workdir / "app", keys["alice"], SCALED_APP)
    (repo.path / "www" / "cgi-bin").mkdir()
    repo.write("www/cgi-bin/host", HOSTNAME_CGI)
    repo.write("Procfile", "web: httpd -f -p $PORT -h /www\nworker: sleep 1000\n")
    repo.commit("scalable")
    pushed = repo.push(on_podman.remote(app))
    assert pushed.returncode == 0, pushed.stderr
    scaled = ssh_command_line(on_podman, keys["alice"], f"ps:scale {app} web=3 worker=2")
    assert scaled.returncode == 0, scaled.stderr

    def processes() -> list[str]:
        listing = ssh_command_line(on_podman, keys["alice"], f"ps {app}").stdout
        return [line.split()[0] for line in listing.splitlines()[1:] if " up " in line]

    assert wait_until(lambda: len(processes()) == 5, 20), processes()
    assert processes() == ["web.1", "web.2", "web.3", "worker.1", "worker.2"]
    assert len(hostnames(on_podman, app, 30)) == 3
