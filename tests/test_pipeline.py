"""End to end: per-app settings, health checks with a path, and the deploy queue."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from tests.helpers import (
    HTTPD_DOCKERFILE,
    SHELL_DOCKERFILE_HEAD,
    AppRepo,
    Key,
    Server,
    read_until,
    run,
    wait_until,
)


def test_health_path_must_answer_2xx_or_3xx(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("checked")).returncode == 0
    server.cli("apps", "set", "checked", "health_path=/missing")
    repo.write("www/index.html", "v2\n")
    repo.commit("v2")
    failed = repo.push(server.remote("checked"))
    assert failed.returncode != 0
    assert "GET /missing answered 404" in failed.stderr
    assert server.get("checked") == (200, "hello v1\n")

    (repo.path / "www" / "health").write_text("ok\n")
    repo.commit("add a health endpoint")
    server.cli("apps", "set", "checked", "health_path=/health")
    ok = repo.push(server.remote("checked"))
    assert ok.returncode == 0, ok.stderr
    assert "GET /health ok" in ok.stderr
    assert server.get("checked") == (200, "v2\n")


def test_dockerfile_path_and_port_are_per_app_settings(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    (repo.path / "deploy").mkdir()
    repo.write(
        "deploy/web.Dockerfile",
        HTTPD_DOCKERFILE.replace("EXPOSE 5000\n", "").replace('"5000"', '"8123"'),
    )
    repo.write("Dockerfile", "FROM scratch\nCOPY does-not-exist /\n")
    repo.commit("dockerfile elsewhere")
    assert repo.push(server.remote("custom")).returncode != 0
    server.cli("apps", "set", "custom", "dockerfile=deploy/web.Dockerfile", "port=8123")
    result = repo.push(server.remote("custom"))
    assert result.returncode == 0, result.stderr
    assert "build type: dockerfile (found deploy/web.Dockerfile)" in result.stderr
    assert "listening on port 8123" in result.stderr
    assert server.get("custom") == (200, "hello v1\n")
    shown = server.cli("apps", "show", "custom").stdout
    assert "dockerfile deploy/web.Dockerfile" in shown, shown  # apps:info's rendering
    assert "\nport:           8123\n" in shown, shown


def test_bad_app_settings_are_refused_with_advice(server: Server) -> None:
    for bad, advice in [
        ("port=99999", "1 to 65535"),
        ("dockerfile=../etc/passwd", "inside the"),
        ("health_path=health", "/health"),
        ("colour=blue", "KEY=VALUE"),
        ("deploy_branch=a..b", "branch name"),
    ]:
        result = server.cli("apps", "set", "nosuch", bad, check=False)
        assert result.returncode == 2, result.stderr
        assert advice in result.stderr
    missing = server.cli("apps", "set", "nosuch", "port=80", check=False)
    assert missing.returncode == 1 and "app 'nosuch' does not exist" in missing.stderr


def test_app_port_comes_from_the_single_exposed_port(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"], HTTPD_DOCKERFILE.replace("5000", "7070"))
    result = repo.push(server.remote("exposed"))
    assert result.returncode == 0, result.stderr
    assert "listening on port 7070" in result.stderr


def test_port_env_is_set_for_the_app(server: Server, keys: dict[str, Key], workdir: Path) -> None:
    # No EXPOSE: the app listens on $PORT, which must be 5000.
    repo = AppRepo(
        workdir / "app",
        keys["alice"],
        SHELL_DOCKERFILE_HEAD
        + 'COPY www /www\nCMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n',
    )
    result = repo.push(server.remote("portenv"))
    assert result.returncode == 0, result.stderr
    assert "listening on port 5000" in result.stderr
    assert server.get("portenv") == (200, "hello v1\n")


def test_pushes_to_one_app_queue_and_apps_deploy_in_parallel(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    slow = (
        SHELL_DOCKERFILE_HEAD + 'RUN sleep 2 && echo "{tag}"\nCOPY www /www\n'
        'CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]\n'
    )
    first = AppRepo(workdir / "one", keys["alice"], slow.format(tag=f"a{time.time()}"))
    second = AppRepo(workdir / "two", keys["alice"], slow.format(tag=f"b{time.time()}"))
    second.write("www/index.html", "second\n")
    second.commit("second")
    other = AppRepo(workdir / "other", keys["alice"], slow.format(tag=f"c{time.time()}"))

    results: dict[str, subprocess.CompletedProcess[str]] = {}
    timings: dict[str, tuple[float, float]] = {}

    def is_building(app: str) -> bool:
        try:
            return "building" in server.statuses(app)
        except AssertionError:
            return False  # the app does not exist yet

    def push(name: str, repo: AppRepo, app: str, after_first_builds: bool) -> None:
        # The second push starts once the first one's ref is stored and its build runs
        # (a fixed delay raced the first push's handshake on a loaded machine).
        if after_first_builds:
            assert wait_until(lambda: is_building("queued"), 60)
        began = time.monotonic()
        results[name] = repo.push(server.remote(app), "+main")
        timings[name] = (began, time.monotonic())

    threads = [
        threading.Thread(target=push, args=("first", first, "queued", False)),
        threading.Thread(target=push, args=("second", second, "queued", True)),
        threading.Thread(target=push, args=("other", other, "parallel", False)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert all(r.returncode == 0 for r in results.values()), {
        k: r.stderr for k, r in results.items()
    }
    assert "Queued behind an earlier deploy of queued" in results["second"].stderr
    assert "Queued" not in results["other"].stderr
    # The second push to the same app went live after the first one.
    assert timings["second"][1] > timings["first"][1]
    assert server.get("queued") == (200, "second\n")
    # Different apps overlapped: each started building before the other went live.
    building = stage_times(server, "building")
    live = stage_times(server, "running")
    assert building["parallel"] < live["queued"] and building["queued"] < live["parallel"]


def stage_times(server: Server, stage: str) -> dict[str, float]:
    """When each app's first deployment logged its first line of `stage` (from the db)."""
    with sqlite3.connect(server.data_dir / "rivetr.db") as db:
        rows = db.execute(
            "SELECT a.name, MIN(l.at) FROM deployment_logs l JOIN deployments d "
            "ON d.id = l.deployment_id JOIN apps a ON a.id = d.app_id "
            "WHERE l.stage = ? AND d.id = (SELECT MIN(id) FROM deployments WHERE app_id = a.id) "
            "GROUP BY a.name",
            (stage,),
        ).fetchall()
    return dict(rows)


def test_pusher_disconnecting_does_not_stop_the_deploy(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(
        workdir / "app",
        keys["alice"],
        SHELL_DOCKERFILE_HEAD + f'RUN echo "slow-{time.time()}" && sleep 2\nCOPY www /www\n'
        'CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]\n',
    )
    push = repo.start_push(server.remote("orphan"))
    read_until(push, b"slow-")
    os.killpg(push.pid, signal.SIGKILL)  # git and its ssh: the pusher is gone
    push.wait(timeout=10)
    wait_until(lambda: server.statuses("orphan")[0] in ("running", "failed"), 60)
    assert server.statuses("orphan")[0] == "running"
    assert server.get("orphan") == (200, "hello v1\n")
    deploy_id = server.cli("deploys", "list", "orphan").stdout.splitlines()[1].split()[0][1:]
    assert "-----> Running:" in server.cli("logs", deploy_id).stdout


def test_old_release_images_are_pruned(server: Server, keys: dict[str, Key], workdir: Path) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    for n in range(5):
        repo.write("www/index.html", f"release {n}\n")
        repo.commit(f"release {n}")
        assert repo.push(server.remote("pruned")).returncode == 0
    assert server.get("pruned") == (200, "release 4\n")

    def tags() -> list[str]:
        return run(
            ["docker", "images", "--format", "{{.Tag}}", f"rivetr-{server.instance}/pruned"]
        ).stdout.split()

    wait_until(lambda: len(tags()) <= 3, 15)
    live = server.cli("deploys", "list", "pruned").stdout.splitlines()[1].split()[0][1:]
    assert len(tags()) == 3 and live in tags()


def test_max_concurrent_deploys_limits_parallel_builds(
    docker_engine: None, keys: dict[str, Key], workdir: Path
) -> None:
    from tests.conftest import running_server

    servers = running_server(workdir / "data", keys, env={"RIVETR_MAX_CONCURRENT_DEPLOYS": "1"})
    srv = next(servers)
    try:
        slow = (
            SHELL_DOCKERFILE_HEAD + 'RUN sleep 1.5 && echo "{tag}"\nCOPY www /www\n'
            'CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]\n'
        )
        repos = {
            app: AppRepo(workdir / app, keys["alice"], slow.format(tag=f"{app}{time.time()}"))
            for app in ("slot-a", "slot-b")
        }
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        threads = [
            threading.Thread(
                target=lambda a=app, r=repo: results.__setitem__(a, r.push(srv.remote(a)))
            )
            for app, repo in repos.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert all(r.returncode == 0 for r in results.values())
        waited = [a for a, r in results.items() if "Waiting for a free deploy slot" in r.stderr]
        assert len(waited) == 1
        building, live = stage_times(srv, "building"), stage_times(srv, "running")
        first = "slot-a" if waited == ["slot-b"] else "slot-b"
        assert building[waited[0]] > live[first]  # strictly one after the other
    finally:
        servers.close()


def test_build_context_keeps_modes_symlinks_and_directories(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(
        workdir / "app",
        keys["alice"],
        SHELL_DOCKERFILE_HEAD
        + "COPY app /app\n"
        + "RUN test -x /app/bin/start.sh && test ! -x /app/data.txt "
        + '&& test "$(readlink /app/current)" = "bin/start.sh" '
        + '&& test "$(cat /app/deep/a/b/c.txt)" = "deep"\n'
        + "COPY www /www\n"
        + 'CMD ["/app/bin/start.sh"]\n',
    )
    (repo.path / "app" / "bin").mkdir(parents=True)
    (repo.path / "app" / "deep" / "a" / "b").mkdir(parents=True)
    start = repo.path / "app" / "bin" / "start.sh"
    start.write_text("#!/bin/sh\nexec httpd -f -p 5000 -h /www\n")
    start.chmod(0o755)
    (repo.path / "app" / "data.txt").write_text("data\n")
    (repo.path / "app" / "deep" / "a" / "b" / "c.txt").write_text("deep\n")
    (repo.path / "app" / "current").symlink_to("bin/start.sh")
    repo.commit("modes and links")
    result = repo.push(server.remote("modes"))
    assert result.returncode == 0, result.stderr
    assert server.get("modes") == (200, "hello v1\n")


def test_newer_push_supersedes_a_queued_one(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    slow = (
        SHELL_DOCKERFILE_HEAD + 'RUN sleep 2 && echo "{tag}"\nCOPY www /www\n'
        'CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]\n'
    )
    repos = []
    for n in range(3):
        repo = AppRepo(workdir / f"r{n}", keys["alice"], slow.format(tag=f"{n}-{time.time()}"))
        repo.write("www/index.html", f"push {n}\n")
        repo.commit(f"push {n}")
        repos.append(repo)
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    def push(n: int) -> None:
        results[n] = repos[n].push(server.remote("superseded"), "+main")

    threads = []
    for n in range(3):
        threads.append(threading.Thread(target=push, args=(n,)))
        threads[-1].start()
        time.sleep(0.8)  # 0 is building when 1 queues; 2 arrives while 1 still waits
    for t in threads:
        t.join(timeout=180)
    assert results[0].returncode == 0, results[0].stderr
    assert results[1].returncode != 0
    assert f"superseded by {repos[2].head()[:7]}" in results[1].stderr
    assert results[2].returncode == 0, results[2].stderr
    assert server.get("superseded") == (200, "push 2\n")
    assert server.statuses("superseded") == ["running", "failed", "replaced"]
