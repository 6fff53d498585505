"""End to end: real git over real SSH into the real daemon, real Docker, real proxy."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import (
    GIT_ENV,
    SHELL_DOCKERFILE_HEAD,
    AppRepo,
    Key,
    Server,
    docker_ids,
    run,
    wait_until,
)


def no_build_dirs_left(server: Server) -> bool:
    tmp = server.data_dir / "tmp"
    return not tmp.exists() or not any(tmp.iterdir())


def test_first_push_creates_and_deploys_then_second_push_replaces(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "hello", keys["alice"])
    first = repo.push(server.remote("hello"))
    assert first.returncode == 0, first.stderr
    assert "-----> Cloning" in first.stderr
    assert "-----> Building" in first.stderr
    assert "-----> Starting" in first.stderr
    assert "-----> Health check" in first.stderr
    assert f"-----> Running: http://hello.localhost:{server.proxy_port}/" in first.stderr
    assert server.get("hello") == (200, "hello v1\n")
    [old_container] = docker_ids("ps", server.instance, "label=rivetr.app=hello")
    # --init (fast, clean stops) and published on loopback only.
    inspect = run(
        [
            "docker",
            "inspect",
            "-f",
            '{{.HostConfig.Init}} {{(index (index .NetworkSettings.Ports "5000/tcp") 0)'
            ".HostIp}} {{index .Config.Env}}",
            old_container,
        ]
    ).stdout
    assert inspect.startswith("true 127.0.0.1 ") and "PORT=5000" in inspect

    repo.write("www/index.html", "hello v2\n")
    repo.commit("second")
    second = repo.push(server.remote("hello"))
    assert second.returncode == 0, second.stderr
    assert server.get("hello") == (200, "hello v2\n")
    wait_until(lambda: old_container not in docker_ids("ps", server.instance), 15)
    assert docker_ids("ps", server.instance, "label=rivetr.app=hello") != [old_container]
    assert old_container not in docker_ids("ps", server.instance)
    assert server.statuses("hello") == ["running", "replaced"]
    assert no_build_dirs_left(server)

    # The stored log is the same story the pusher saw.
    deploy_id = server.cli("deploys", "list", "hello").stdout.splitlines()[1].split()[0][1:]
    log = server.cli("logs", deploy_id).stdout
    assert "-----> Running: http://hello.localhost" in log
    assert "step 1/" in log.lower()  # Docker: "Step 1/5", Podman: "STEP 1/5"


def assert_failed_cleanly(
    server: Server,
    repo: AppRepo,
    app: str,
    good_sha: str,
    result: subprocess.CompletedProcess[str],
    reason: str,
) -> None:
    assert result.returncode != 0
    last_remote = [ln for ln in result.stderr.splitlines() if ln.startswith("remote:")][-1]
    assert "Deploy failed at" in last_remote and reason in last_remote, result.stderr
    assert server.get(app) == (200, "hello v1\n")  # the old release keeps serving
    assert repo.remote_sha(server.remote(app)) == good_sha  # the branch went back
    containers = docker_ids("ps", server.instance, f"label=rivetr.app={app}")
    assert len(containers) == 1  # only the live release's
    assert no_build_dirs_left(server)
    assert server.statuses(app)[0] == "failed"
    failed_id = server.cli("deploys", "list", app).stdout.splitlines()[1].split()[0][1:]
    assert f"rivetr-{server.instance}/{app}:{failed_id}" not in docker_ids(
        "images", server.instance
    )


def test_build_failure_keeps_old_release_and_restores_branch(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("buildfail")).returncode == 0
    good = repo.head()
    repo.write("Dockerfile", SHELL_DOCKERFILE_HEAD + 'RUN echo "about to fail" && exit 3\n')
    repo.commit("broken build")
    images_before = set(docker_ids("images", server.instance))
    result = repo.push(server.remote("buildfail"))
    assert "about to fail" in result.stderr
    assert_failed_cleanly(server, repo, "buildfail", good, result, "at building")
    # The builder's own words: Docker's, or Podman's (tests/test_podman.py).
    assert "returned a non-zero code: 3" in result.stderr or "exit status 3" in result.stderr, (
        result.stderr
    )
    assert set(docker_ids("images", server.instance)) <= images_before
    # Re-pushing after the fix deploys again.
    repo.git("revert", "--no-edit", "HEAD")
    assert repo.push(server.remote("buildfail")).returncode == 0


def test_never_healthy_app_fails_and_old_release_keeps_serving(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("unhealthy")).returncode == 0
    good = repo.head()
    # Runs forever, but listens on the wrong port.
    repo.write(
        "Dockerfile",
        repo.path.joinpath("Dockerfile").read_text().replace('"-p", "5000"', '"-p", "6000"'),
    )
    repo.commit("listens on the wrong port")
    result = repo.push(server.remote("unhealthy"))
    assert_failed_cleanly(server, repo, "unhealthy", good, result, "health_check")
    assert "keeps serving" in result.stderr


def test_crashing_app_fails_at_start_or_health(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("crashy")).returncode == 0
    good = repo.head()
    repo.write("Dockerfile", SHELL_DOCKERFILE_HEAD + 'CMD ["sh", "-c", "echo boom >&2; exit 7"]\n')
    repo.commit("crashes")
    result = repo.push(server.remote("crashy"))
    assert "exit code 7" in result.stderr
    assert result.returncode != 0
    assert server.get("crashy") == (200, "hello v1\n")
    assert repo.remote_sha(server.remote("crashy")) == good
    assert len(docker_ids("ps", server.instance, "label=rivetr.app=crashy")) == 1


def test_first_deploy_failure_deletes_the_branch(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    repo.write("Dockerfile", "FROM scratch\nCOPY nothing-here /x\n")
    repo.commit("broken from the start")
    result = repo.push(server.remote("neverlive"))
    assert result.returncode != 0
    assert repo.remote_sha(server.remote("neverlive")) is None
    assert docker_ids("ps", server.instance, "label=rivetr.app=neverlive") == []
    assert server.get("neverlive")[0] == 404


def test_build_output_streams_before_the_build_finishes(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    repo.write(
        "Dockerfile",
        SHELL_DOCKERFILE_HEAD
        + f'RUN echo "marker-{time.time()}" && sleep 3 && echo "after sleep"\n'
        + 'COPY www /www\nCMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]\n',
    )
    repo.commit("slow build")
    proc = subprocess.Popen(
        ["git", "push", server.remote("streamer"), "main"],
        cwd=repo.path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={
            **os.environ,
            **GIT_ENV,
            "GIT_SSH_COMMAND": __import__("tests.helpers").helpers.ssh_command(
                keys["alice"].private
            ),
        },
    )
    assert proc.stderr is not None
    marker_at = None
    buffer = b""
    while chunk := os.read(proc.stderr.fileno(), 4096):
        buffer += chunk
        if marker_at is None and b"marker-" in buffer:
            marker_at = time.monotonic()
    proc.wait(timeout=120)
    ended_at = time.monotonic()
    assert proc.returncode == 0, buffer.decode()
    assert marker_at is not None
    assert ended_at - marker_at > 2.0  # seen during the 3 s sleep, not at the end


def test_push_to_other_branch_is_stored_not_deployed(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("branches")).returncode == 0
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("www/index.html", "feature\n")
    sha = repo.commit("feature work")
    result = repo.push(server.remote("branches"), "feature")
    assert result.returncode == 0, result.stderr
    assert "not deployed" in result.stderr
    assert repo.remote_sha(server.remote("branches"), "refs/heads/feature") == sha
    repo.git("tag", "v1")
    tag = repo.push(server.remote("branches"), "v1")
    assert tag.returncode == 0 and "tag v1 stored, not deployed" in tag.stderr
    assert server.get("branches") == (200, "hello v1\n")
    assert server.statuses("branches") == ["running"]


def test_deleting_the_deploy_branch_is_refused(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("nodelete")).returncode == 0
    sha = repo.head()
    result = repo.push(server.remote("nodelete"), ":main")
    assert result.returncode != 0
    assert "Refusing to delete branch main" in result.stderr
    assert repo.remote_sha(server.remote("nodelete")) == sha
    assert server.get("nodelete") == (200, "hello v1\n")


def test_large_push_and_clone_round_trip_byte_exact(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    blob = os.urandom(30 * 1024 * 1024)
    (repo.path / "big.bin").write_bytes(blob)
    repo.git("checkout", "-q", "-b", "big")
    sha = repo.commit("30 MB of noise")
    # Stored on a side branch: this is about the git transport, not the build.
    result = repo.push(server.remote("bigrepo"), "big")
    assert result.returncode == 0, result.stderr
    clone = workdir / "clone"
    repo.git("clone", "-q", "-b", "big", server.remote("bigrepo"), str(clone), timeout=180)
    assert (clone / "big.bin").read_bytes() == blob
    assert repo.git("-C", str(clone), "rev-parse", "HEAD").stdout.strip() == sha


def test_app_urls_accept_every_remote_form(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("forms") + ".git").returncode == 0
    repo.commit("again")
    # scp form, through an ssh config alias so the port can be given
    config = workdir / "ssh_config"
    config.write_text(
        f"Host rivetr-test\n  HostName 127.0.0.1\n  Port {server.ssh_port}\n"
        f"  User git\n  IdentityFile {keys['alice'].private}\n"
    )
    scp = subprocess.run(
        ["git", "push", "rivetr-test:forms", "main"],
        cwd=repo.path,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            **GIT_ENV,
            "GIT_SSH_COMMAND": f"ssh -F {config} -o IdentitiesOnly=yes "
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o LogLevel=ERROR",
        },
        timeout=120,
    )
    assert scp.returncode == 0, scp.stderr
    assert server.statuses("forms") == ["running", "replaced"]


def test_cli_lists_apps_and_keys(server: Server, keys: dict[str, Key], workdir: Path) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("listed")).returncode == 0
    apps = server.cli("apps", "list").stdout
    assert "listed" in apps
    listed = server.cli("keys", "list").stdout
    assert "alice" in listed and "admin" in listed and "bob" in listed and "developer" in listed


def test_state_file_points_at_the_live_daemon(server: Server) -> None:
    state = json.loads((server.data_dir / "daemon.json").read_text())
    assert server.proc is not None and state["pid"] == server.proc.pid


@pytest.mark.parametrize("path", ["/healthz"])
def test_proxy_answers_for_itself_and_404s_unknown_hosts(server: Server, path: str) -> None:
    assert server.get("nosuchapp")[0] == 404
    import urllib.request

    with urllib.request.urlopen(
        urllib.request.Request(
            f"http://127.0.0.1:{server.proxy_port}{path}", headers={"Host": "localhost"}
        ),
        timeout=5,
    ) as response:
        assert response.status == 200
