"""Persistent storage and log caps, end to end: real SSH, real daemon, real Docker.

A counter app (busybox httpd, a CGI script adding one to /data/count) shows that what one
container wrote the next one sees: across deploys, rollbacks, a server restart and `run`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.helpers import SHELL_DOCKERFILE_HEAD, AppRepo, Key, Server, run, wait_until
from tests.test_admin_verbs import fails, ok, verb

pytestmark = pytest.mark.docker

COUNTER_APP = (
    SHELL_DOCKERFILE_HEAD
    + """\
COPY www /www
RUN chmod +x /www/cgi-bin/count
EXPOSE 5000
CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]
"""
)
# Adds one to /data/count (0 when missing) and answers the new value and the page's version.
COUNT_CGI = """#!/bin/sh
n=$(cat /data/count 2>/dev/null || echo 0)
n=$((${n:-0} + 1))
# Written aside, then renamed: a request running at the same time (a poll the client
# gave up on, under load) never reads a half-written, empty file and starts again at 1.
echo "$n" > /data/count.$$ && mv /data/count.$$ /data/count
echo 'Content-Type: text/plain'
echo
echo "$n $(cat /www/index.html)"
"""


@pytest.fixture(scope="module")
def storage_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage-root").resolve()


@pytest.fixture(scope="module")
def st_server(
    docker_engine: None,
    tmp_path_factory: pytest.TempPathFactory,
    keys: dict[str, Key],
    storage_root: Path,
) -> Iterator[Server]:
    """A daemon with host mounts allowed under `storage_root` and small log caps."""
    yield from running_server(
        tmp_path_factory.mktemp("st") / "data",
        keys,
        with_bob=True,
        env={
            "RIVETR_STORAGE_ROOT": str(storage_root),
            "RIVETR_LOG_MAX_SIZE": "1m",
            "RIVETR_LOG_MAX_FILES": "2",
            "RIVETR_KEEP_DEPLOYMENTS": "3",
        },
    )


def counter_app(path: Path, key: Key) -> AppRepo:
    repo = AppRepo(path, key, COUNTER_APP)
    (repo.path / "www" / "cgi-bin").mkdir()
    repo.write("www/cgi-bin/count", COUNT_CGI)
    repo.commit("counter")
    return repo


def count(server: Server, app: str) -> str:
    status, body = server.get(app, "/cgi-bin/count")
    assert status == 200, body
    return body.strip()


def live_container(server: Server, app: str) -> dict[str, object]:
    """`docker inspect` of the app's one running container (after the old one has left)."""
    filters = [
        "--filter",
        f"label=rivetr.instance={server.instance}",
        "--filter",
        f"label=rivetr.app={app}",
        "--filter",
        "status=running",
    ]

    def ids() -> list[str]:
        return run(["docker", "ps", "-q", *filters]).stdout.split()

    assert wait_until(lambda: len(ids()) == 1, 30), ids()
    [found] = json.loads(run(["docker", "inspect", ids()[0]]).stdout)
    assert isinstance(found, dict)
    return found


def volumes_of(server: Server, app: str) -> list[str]:
    return run(
        [
            "docker",
            "volume",
            "ls",
            "-q",
            "--filter",
            f"label=rivetr.instance={server.instance}",
            "--filter",
            f"label=rivetr.app={app}",
        ]
    ).stdout.split()


def test_volume_survives_deploys_rollback_restart_and_run_sees_it(
    st_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    app, alice = "stcount", keys["alice"]
    repo = counter_app(tmp_path / "count", alice)
    result = repo.push(st_server.remote(app))
    assert result.returncode == 0, result.stderr
    out = ok(st_server, alice, "storage:mount", app, "data:/data")
    assert "mounted at /data" in out and "ps:restart" in out
    volume = f"rivetr-{st_server.instance}-{app}-data"
    assert volumes_of(st_server, app) == [volume]
    ok(st_server, alice, "ps:restart", app)
    assert count(st_server, app) == "1 hello v1"
    assert count(st_server, app) == "2 hello v1"
    mounts = live_container(st_server, app)["Mounts"]
    assert isinstance(mounts, list)
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [
        ("volume", volume, "/data")
    ]
    # A new release sees what the old one wrote.
    repo.write("www/index.html", "hello v2\n")
    repo.commit("v2")
    assert repo.push(st_server.remote(app)).returncode == 0
    assert count(st_server, app) == "3 hello v2"
    # So does the release a rollback runs again.
    ok(st_server, alice, "rollback", app)
    assert count(st_server, app) == "4 hello v1"
    # And a one-off container.
    result = verb(st_server, alice, "run", app, "cat", "/data/count")
    assert (result.returncode, result.stdout.strip()) == (0, "4"), result.stderr
    # A server restart: the mount is in the database, so the next container has it too.
    st_server.stop()
    st_server.start()
    assert count(st_server, app) == "5 hello v1"
    ok(st_server, alice, "ps:restart", app)
    assert count(st_server, app) == "6 hello v1"
    listing = ok(st_server, alice, "storage:list", app).splitlines()
    assert listing[0].split() == ["VOLUME", "PATH", "SIZE"]
    assert listing[1].split() == ["data", "/data", "2", "B"]  # "6\n" is in it: 2 bytes
    # Unmounting keeps the data; mounting it again brings it back.
    out = ok(st_server, alice, "storage:unmount", app, "/data")
    assert "kept" in out
    ok(st_server, alice, "ps:restart", app)
    assert count(st_server, app) == "1 hello v1"  # an empty /data in the container
    ok(st_server, alice, "storage:mount", app, "data:/data")
    ok(st_server, alice, "ps:restart", app)
    assert count(st_server, app) == "7 hello v1"


def test_bad_mounts_are_refused_with_what_to_do(
    st_server: Server, keys: dict[str, Key], tmp_path: Path, storage_root: Path
) -> None:
    app, alice, bob = "stcheck", keys["alice"], keys["bob"]
    ok(st_server, alice, "apps:create", app)
    for spec, words in [
        ("data:relative/path", "absolute path"),
        ("data:/app/../etc", "without .."),
        ("data:/", "other than /"),
        ("data", "VOLUME:/path"),
        ("Bad_Name:/data", "not a volume name"),
        ("../x:/data", "not a volume name"),
        (f"{tmp_path}:/data", "outside storage_root"),
    ]:
        assert words in fails(st_server, alice, "storage:mount", app, spec), spec
    # A symlink under the root that points out of it is judged by where it points.
    (storage_root / "escape").symlink_to(tmp_path)
    err = fails(st_server, alice, "storage:mount", app, f"{storage_root}/escape:/data")
    assert "outside storage_root" in err
    # Developers mount volumes, never host directories.
    ok(st_server, alice, "access:grant", "bob", app)
    (storage_root / "shared").mkdir()
    err = fails(st_server, bob, "storage:mount", app, f"{storage_root}/shared:/srv")
    assert "only admins may mount host directories" in err
    ok(st_server, bob, "storage:mount", app, "cache:/cache")
    assert "already has cache mounted" in fails(
        st_server, bob, "storage:mount", app, "other:/cache"
    )
    assert "nothing is mounted at /nope" in fails(st_server, bob, "storage:unmount", app, "/nope")
    listing = ok(st_server, bob, "storage:list", app)
    assert "shared" not in listing and "/srv" not in listing
    # Two apps' volume names that meet (stcheck's other-v, stcheck-other's v) never share one.
    ok(st_server, alice, "storage:mount", app, "other-v:/v")
    ok(st_server, alice, "apps:create", "stcheck-other")
    err = fails(st_server, alice, "storage:mount", "stcheck-other", "v:/v")
    assert f"volume rivetr-{st_server.instance}-stcheck-other-v exists and is not this one" in err
    assert "mounts nothing" in ok(st_server, alice, "storage:list", "stcheck-other")


def test_admin_host_mount_under_storage_root_reaches_the_container(
    st_server: Server, keys: dict[str, Key], tmp_path: Path, storage_root: Path
) -> None:
    app, alice = "sthost", keys["alice"]
    host = storage_root / "sthost"
    host.mkdir()
    (host / "count").write_text("41\n")
    os.chmod(host, 0o777)  # the app writes to it (as root here; any user elsewhere)
    ok(st_server, alice, "apps:create", app)
    out = ok(st_server, alice, "storage:mount", app, f"{host}:/data")
    assert f"host directory {host} mounted at /data" in out
    repo = counter_app(tmp_path / "host", alice)
    assert repo.push(st_server.remote(app)).returncode == 0
    assert count(st_server, app) == "42 hello v1"
    assert (host / "count").read_text() == "42\n"
    assert ok(st_server, alice, "storage:list", app).splitlines()[1].split() == [
        str(host),
        "/data",
        "-",
    ]


def test_destroy_keeps_volumes_and_says_so_purge_data_removes_them(
    st_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    app, alice = "stdestroy", keys["alice"]
    repo = counter_app(tmp_path / "destroy", alice)
    ok(st_server, alice, "apps:create", app)
    ok(st_server, alice, "storage:mount", app, "data:/data")
    assert repo.push(st_server.remote(app)).returncode == 0
    assert count(st_server, app) == "1 hello v1"
    volume = f"rivetr-{st_server.instance}-{app}-data"
    out = ok(st_server, alice, "apps:destroy", app, "--confirm", app)
    assert f"kept the volumes of {app}: {volume}" in out
    assert volumes_of(st_server, app) == [volume]
    # The same name again, mounting the same volume: the data is back.
    ok(st_server, alice, "apps:create", app)
    ok(st_server, alice, "storage:mount", app, "data:/data")
    assert repo.push(st_server.remote(app), "main").returncode == 0
    assert count(st_server, app) == "2 hello v1"
    out = ok(st_server, alice, "apps:destroy", app, "--confirm", app, "--purge-data")
    assert f"removed the volumes of {app}: {volume}" in out
    assert volumes_of(st_server, app) == []


def test_every_container_gets_the_log_caps(
    st_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    app, alice = "stlogs", keys["alice"]
    repo = counter_app(tmp_path / "logs", alice)
    assert repo.push(st_server.remote(app)).returncode == 0
    config = live_container(st_server, app)["HostConfig"]
    assert isinstance(config, dict)
    assert config["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": str(1024**2), "max-file": "2"},
    }
    # One-off containers too: look at one while it runs.
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(verb, st_server, alice, "run", app, "sleep", "3")
        oneoff = ["--filter", f"label=rivetr.instance={st_server.instance}"]
        oneoff += ["--filter", "label=rivetr.oneoff=1"]

        def ids() -> list[str]:
            return run(["docker", "ps", "-q", *oneoff]).stdout.split()

        assert wait_until(ids, 20)
        out = run(["docker", "inspect", "-f", "{{json .HostConfig.LogConfig}}", *ids()]).stdout
        assert json.loads(out)["Config"] == {"max-size": str(1024**2), "max-file": "2"}
        assert running.result().returncode == 0


def test_deploys_prune_old_deployments_but_not_kept_releases(
    st_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    app, alice = "stprune", keys["alice"]
    repo = AppRepo(tmp_path / "prune", alice)
    assert repo.push(st_server.remote(app)).returncode == 0
    first = st_server.cli("deploys", "list", app).stdout.splitlines()[1].split()[0]
    for n in range(3):
        repo.write("Dockerfile", f"FROM scratch\nNOT-AN-INSTRUCTION {n}\n")
        repo.commit(f"broken {n}")
        assert repo.push(st_server.remote(app)).returncode != 0
    repo.git("checkout", "HEAD~3", "--", "Dockerfile")
    repo.commit("fixed")
    assert repo.push(st_server.remote(app)).returncode == 0
    # keep_deployments = 3: the newest three, and the first release (keep_releases keeps its
    # image, so rollback may run it); the oldest failure went, with its log.
    assert st_server.statuses(app) == ["running", "failed", "failed", "replaced"]
    assert first in st_server.cli("deploys", "list", app).stdout
    ok(st_server, alice, "rollback", app, first)


COUNTER_COMPOSE = """\
services:
  web:
    build: ./app
    volumes: [counts:/data]
volumes:
  counts: {}
"""


def test_compose_named_volume_is_the_apps_and_survives_redeploys(
    st_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    app, alice = "stcompose", keys["alice"]
    repo = counter_app(tmp_path / "compose", alice)
    (repo.path / "app").mkdir()
    repo.git("mv", "Dockerfile", "busybox", "www", "app/")
    repo.write("docker-compose.yml", COUNTER_COMPOSE)
    repo.commit("as a compose app")
    result = repo.push(st_server.remote(app))
    assert result.returncode == 0, result.stderr
    assert count(st_server, app) == "1 hello v1"
    volume = f"rivetr-{st_server.instance}-{app}-counts"
    assert volumes_of(st_server, app) == [volume]
    container = live_container(st_server, app)
    config = container["HostConfig"]
    assert isinstance(config, dict)
    assert config["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": str(1024**2), "max-file": "2"},
    }
    # A new deployment is a new compose project; the retired one goes with `down -v`.
    repo.write("app/www/index.html", "hello v2\n")
    repo.commit("v2")
    assert repo.push(st_server.remote(app)).returncode == 0
    assert count(st_server, app) == "2 hello v2"
    # A third: the first group is swept (`down -v`) by now; the app's volume stays.
    repo.write("app/www/index.html", "hello v3\n")
    repo.commit("v3")
    assert repo.push(st_server.remote(app)).returncode == 0
    assert count(st_server, app) == "3 hello v3"
    groups = list((st_server.data_dir / "compose").glob(f"rivetr-{st_server.instance}-{app}-*"))
    assert len(groups) <= 2, groups  # v1's group was taken down
    assert volumes_of(st_server, app) == [volume]
    out = ok(st_server, alice, "apps:destroy", app, "--confirm", app)
    assert f"kept the volumes of {app}: {volume}" in out
    assert volumes_of(st_server, app) == [volume]
    run(["docker", "volume", "rm", volume])


def test_the_watch_window_rollback_from_an_image_mounts_the_volume(
    docker_engine: None, tmp_path: Path, keys: dict[str, Key]
) -> None:
    """A new release dies in its watch window and the previous one's container is gone: the
    previous release started again from its image has the app's volume."""
    servers = running_server(tmp_path / "data", keys, env={"RIVETR_WATCH_WINDOW": "6"})
    srv = next(servers)
    try:
        app, alice = "stwatch", keys["alice"]
        repo = counter_app(tmp_path / "watch", alice)
        ok(srv, alice, "apps:create", app)
        ok(srv, alice, "storage:mount", app, "data:/data")
        assert repo.push(srv.remote(app)).returncode == 0
        assert count(srv, app) == "1 hello v1"
        v1 = live_container(srv, app)["Id"]
        assert isinstance(v1, str)
        repo.write(
            "Dockerfile",
            COUNTER_APP.replace(
                'CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]',
                'CMD ["sh", "-c", "httpd -f -p 5000 -h /www & sleep 2; exit 3"]',
            ),
        )
        repo.write("www/index.html", "hello v2\n")
        repo.commit("v2 dies after two seconds")
        assert repo.push(srv.remote(app)).returncode == 0
        run(["docker", "rm", "-f", v1])  # the previous release's container vanishes
        assert wait_until(lambda: srv.get(app, "/cgi-bin/count")[1].endswith("hello v1\n"), 30)
        assert "rolling back to" in srv.cli("deploys", "list", app).stdout
        assert int(count(srv, app).split()[0]) >= 3  # it counts on from what v1 wrote
    finally:
        next(servers, None)
