"""The daemon's life cycle: start-up checks, restarts, and what survives them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import AppRepo, Key, Server, docker_ids, read_until, ssh_command


def test_restart_serves_running_apps_without_redeploy(
    own_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv = own_server
    known_hosts = tmp_path / "known_hosts"
    repo = AppRepo(tmp_path / "app", keys["alice"])
    repo.git(
        "config", "core.sshCommand", ssh_command(keys["alice"].private, known_hosts=known_hosts)
    )
    assert repo.push(srv.remote("survivor")).returncode == 0
    [container] = docker_ids("ps", srv.instance, "label=rivetr.app=survivor")
    host_key = (srv.data_dir / "ssh_host_ed25519_key.pub").read_text()

    srv.stop()
    # App containers keep running while the daemon is down.
    assert docker_ids("ps", srv.instance, "status=running") == [container]
    srv.start()
    assert srv.get("survivor") == (200, "hello v1\n")
    deploys = srv.cli("deploys", "list", "survivor").stdout.splitlines()[1:]
    assert len(deploys) == 1 and "running" in deploys[0]
    # Same host key: the pusher's known_hosts entry still matches (strict checking).
    assert (srv.data_dir / "ssh_host_ed25519_key.pub").read_text() == host_key
    repo.write("www/index.html", "hello v2\n")
    repo.commit("after restart")
    result = repo.push(srv.remote("survivor"))
    assert result.returncode == 0, result.stderr
    assert srv.get("survivor") == (200, "hello v2\n")


def test_kill_9_mid_build_is_cleaned_up_on_restart(
    own_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv = own_server
    repo = AppRepo(tmp_path / "app", keys["alice"])
    assert repo.push(srv.remote("phoenix")).returncode == 0
    good = repo.head()
    repo.write(
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        # $((6*7)): the step's own header line does not contain the marker.
        'RUN echo "building-$((6*7))" && sleep 30\n',
    )
    repo.commit("slow build")
    push = repo.start_push(srv.remote("phoenix"))
    read_until(push, b"building-42")
    srv.stop(signal.SIGKILL)
    push.wait(timeout=30)
    srv.start()
    assert srv.get("phoenix") == (200, "hello v1\n")
    lines = srv.cli("deploys", "list", "phoenix").stdout.splitlines()[1:]
    assert "failed" in lines[0] and "interrupted by restart" in lines[0]
    assert repo.remote_sha(srv.remote("phoenix")) == good
    assert not (srv.data_dir / "tmp").exists() or not any((srv.data_dir / "tmp").iterdir())


def test_kill_9_during_health_check_is_cleaned_up_on_restart(
    own_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv = own_server
    repo = AppRepo(tmp_path / "app", keys["alice"])
    assert repo.push(srv.remote("midcheck")).returncode == 0
    good = repo.head()
    # Listens only after 4 s: the deploy sits in its health check meanwhile.
    repo.write(
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nCOPY www /www\n'
        'CMD ["sh", "-c", "sleep 4; exec httpd -f -p 5000 -h /www"]\n',
    )
    repo.write("www/index.html", "v2\n")
    repo.commit("slow to start")
    push = repo.start_push(srv.remote("midcheck"))
    read_until(push, b"-----> Health check")
    [new_id] = [
        ln.split()[0] for ln in srv.cli("deploys", "list", "midcheck").stdout.splitlines()[1:2]
    ]
    srv.stop(signal.SIGKILL)
    push.wait(timeout=30)
    assert len(docker_ids("ps", srv.instance, "label=rivetr.app=midcheck")) == 2
    srv.start()
    assert srv.get("midcheck") == (200, "hello v1\n")
    lines = srv.cli("deploys", "list", "midcheck").stdout.splitlines()[1:]
    assert lines[0].startswith(new_id) and "interrupted by restart" in lines[0]
    assert len(docker_ids("ps", srv.instance, "label=rivetr.app=midcheck")) == 1
    assert f"rivetr-{srv.instance}/midcheck:{new_id[1:]}" not in docker_ids("images", srv.instance)
    assert repo.remote_sha(srv.remote("midcheck")) == good


def run_serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rivetr_git.cli.main", "--data-dir", str(tmp_path / "d"), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RIVETR_SSH_PORT": "abc"}, "ssh_port"),
        ({"RIVETR_PROXY_PORT": "70000"}, "proxy_port"),
        ({"RIVETR_MAX_CONCURRENT_DEPLOYS": "0"}, "max_concurrent_deploys"),
        ({"RIVETR_AUTO_CREATE_APPS": "maybe"}, "auto_create_apps"),
        ({"RIVETR_BASE_DOMAIN": "-x"}, "base_domain"),
        ({"RIVETR_RUNTIME": "kubernetes"}, "runtime"),
    ],
)
def test_bad_setting_is_refused_at_start_up(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    result = run_serve(tmp_path, env)
    assert result.returncode == 2
    assert f"setting '{named}'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "rivetr.toml"
    config.write_text("ssh_port = 2222\nfancy = true\n")
    result = subprocess.run(
        [sys.executable, "-m", "rivetr_git.cli.main", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown setting 'fancy'" in result.stderr


def test_serve_help_lists_every_setting() -> None:
    from rivetr_git.settings import SETTINGS

    result = subprocess.run(
        [sys.executable, "-m", "rivetr_git.cli.main", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    for setting in SETTINGS:
        assert f"RIVETR_{setting.name.upper()}" in result.stdout


def test_config_file_and_env_precedence(docker_engine: None, tmp_path: Path) -> None:
    config = tmp_path / "rivetr.toml"
    config.write_text(
        'ssh_host = "127.0.0.1"\nproxy_host = "127.0.0.1"\nssh_port = 0\n'
        'proxy_port = 1\nbase_domain = "example.test"\n'
    )
    srv = Server(tmp_path / "data", env={"RIVETR_PROXY_PORT": "0"})
    srv.env.pop("RIVETR_SSH_PORT")
    # --config comes from the command line; the env var beats the file's proxy_port = 1.
    state = srv.data_dir / "daemon.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rivetr_git.cli.main",
            "--data-dir",
            str(srv.data_dir),
            "serve",
            "--config",
            str(config),
        ],
        env={**os.environ, **srv.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not state.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(state.read_text())
        assert info["proxy_port"] not in (0, 1)
        with urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{info['proxy_port']}/healthz", headers={"Host": "example.test"}
            ),
            timeout=5,
        ) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
