"""A compose file gives a developer nothing beyond its own app: every key
that reaches the host is refused at building, pushed by a developer key over real SSH; no
container of the refused deployment starts and the old release keeps serving. Also: compose
never sees the server's environment or writes a value to disk, Dockerfile builds run with the
default network and no host mounts, and destroying a compose app leaves nothing behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.helpers import AppRepo, Key, Server, docker_ids, run
from tests.test_admin_verbs import fails, ok
from tests.test_build_types import COMPOSE_DOCKERFILE, compose_repo, pushed

pytestmark = pytest.mark.docker

GOOD = """\
services:
  web:
    build: ./app
    environment: {GREETING: from-compose}
"""
LIVE = "czlive"


@pytest.fixture(scope="module")
def srv(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key]
) -> Iterator[Server]:
    # GREETING in the daemon's own environment: compose must never pass it on.
    yield from running_server(
        tmp_path_factory.mktemp("cz") / "data",
        keys,
        with_bob=True,
        env={"GREETING": "server-env-leaked"},
    )


@pytest.fixture(scope="module")
def live(
    srv: Server, keys: dict[str, Key], tmp_path_factory: pytest.TempPathFactory
) -> tuple[AppRepo, list[str]]:
    """One good compose release of bob's (a developer granted only this app), live."""
    ok(srv, keys["alice"], "apps:create", LIVE)
    srv.cli("access", "grant", "bob", LIVE)
    repo = compose_repo(tmp_path_factory.mktemp("czlive") / "repo", keys["bob"], GOOD)
    pushed(repo, srv, LIVE)
    assert srv.get(LIVE, "/cgi-bin/env") == (200, "from-compose 5000\n")
    return repo, sorted(docker_ids("ps", srv.instance, f"label=rivetr.app={LIVE}"))


WEB = "services:\n  web:\n    build: ./app\n"
HOST = "compose apps run without host access"
# (what the pushed file says, what the refusal says)
REFUSED = [
    (WEB + "    pid: host\n", f'service web: "pid: host" is not allowed; {HOST}'),
    (WEB + "    privileged: true\n", 'service web: "privileged: true" is not allowed'),
    (WEB + "    ipc: host\n", 'service web: "ipc: host" is not allowed'),
    (WEB + "    uts: host\n", 'service web: "uts: host" is not allowed'),
    (WEB + "    userns_mode: host\n", 'service web: "userns_mode: host" is not allowed'),
    (WEB + "    network_mode: host\n", 'service web: "network_mode: host" is not allowed'),
    (WEB + "    cap_add: [SYS_ADMIN]\n", 'service web: "cap_add: ["SYS_ADMIN"]" is not'),
    (WEB + "    devices: ['/dev/null:/dev/x']\n", 'service web: "devices: '),
    (WEB + "    security_opt: ['seccomp:unconfined']\n", 'service web: "security_opt: '),
    (WEB + "    sysctls: {net.ipv4.ip_unprivileged_port_start: 0}\n", 'service web: "sysctls'),
    (WEB + "    cgroup_parent: /\n", 'service web: "cgroup_parent: /" is not allowed'),
    (WEB + "    ulimits: {nofile: 1048576}\n", "ulimits are the server's"),
    (WEB + "    volumes: ['/:/host']\n", f'service web: "volumes: /:/host" is not allowed; {HOST}'),
    (
        WEB + "    volumes: [/var/run/docker.sock:/var/run/docker.sock]\n",
        'service web: "volumes: /var/run/docker.sock:/var/run/docker.sock" is not allowed',
    ),
    (
        WEB + "    volumes: [{type: bind, source: /etc, target: /e}]\n",
        'service web: "volumes: {"type": "bind"',
    ),
    (WEB + "    volumes: [./app:/src]\n", 'service web: "volumes: ./app:/src" is not allowed'),
    (
        WEB + "  db:\n    image: busybox\n    volumes_from: ['container:other']\n",
        'service db: "volumes_from',
    ),
    (
        WEB + "    volumes: [data:/d]\nvolumes:\n  data: {external: true}\n",
        'volume data: "external: true" is not allowed; external volumes belong to something',
    ),
    (  # a name of the file's choosing could be another app's volume (the server names them)
        WEB + "    volumes: [data:/d]\nvolumes:\n  data: {name: rivetr-x-other-data}\n",
        'volume data: "name: rivetr-x-other-data" is not allowed',
    ),
    (
        WEB + "    volumes: [data:/d]\nvolumes:\n  data:\n    driver_opts: {type: none, o: bind, "
        "device: /}\n",
        'volume data: "driver_opts',
    ),
    (WEB + "networks:\n  default: {external: true, name: bridge}\n", 'network default: "'),
    (
        "services:\n  web:\n    build: {context: /, dockerfile: etc/Dockerfile}\n",
        "service web: build context '/' is outside the pushed tree",
    ),
    ("services:\n  web:\n    build: ../..\n", "service web: build context '../..' leads outside"),
    (
        "services:\n  web:\n    build: {context: ./app, network: host}\n",
        'service web: build: "network: host" is not allowed; builds run on the default network',
    ),
    (WEB + "    env_file: /etc/passwd\n", "service web: env_file '/etc/passwd' is outside"),
    (
        WEB + "  x:\n    extends: {file: /etc/compose.yml, service: x}\n",
        "service x: extends file '/etc/compose.yml' is outside the pushed tree",
    ),
    ("include: [/etc/compose.yml]\n" + WEB, '"include" is not supported here'),
    # The file of the finding, as pushed.
    (
        "services:\n  web:\n    build: {context: ., dockerfile: app/Dockerfile}\n    pid: host\n"
        "    volumes: ['/:/host', '/var/run/docker.sock:/var/run/docker.sock']\n",
        'service web: "pid: host" is not allowed',
    ),
]
IDS = [
    "pid",
    "privileged",
    "ipc",
    "uts",
    "userns_mode",
    "network_mode",
    "cap_add",
    "devices",
    "security_opt",
    "sysctls",
    "cgroup_parent",
    "ulimits",
    "bind-root",
    "docker-sock",
    "bind-long-syntax",
    "bind-relative",
    "volumes_from",
    "external-volume",
    "named-volume",
    "driver_opts-bind",
    "external-network",
    "build-context-absolute",
    "build-context-escaping",
    "build-network-host",
    "env_file-outside",
    "extends-outside",
    "include",
    "the-finding",
]


@pytest.mark.parametrize(("compose", "message"), REFUSED, ids=IDS)
def test_a_developer_push_that_reaches_the_host_is_refused_before_anything_starts(
    srv: Server, live: tuple[AppRepo, list[str]], compose: str, message: str
) -> None:
    repo, containers = live
    repo.write("docker-compose.yml", compose)
    repo.commit(f"try: {message[:40]}")
    result = repo.push(srv.remote(LIVE))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Deploy failed at building" in result.stderr
    # No container of the refused deployment, created or started; the old release serves.
    assert sorted(docker_ids("ps", srv.instance, f"label=rivetr.app={LIVE}")) == containers
    assert srv.get(LIVE, "/cgi-bin/env") == (200, "from-compose 5000\n")


def test_compose_never_reads_the_servers_environment_nor_writes_values_to_disk(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    # A bare name and an interpolation: both took the daemon's GREETING before.
    repo = compose_repo(
        workdir / "env",
        keys["alice"],
        WEB + "    environment: [GREETING]\n"
        "  other:\n    build: ./app\n    environment:\n"
        '      GREETING: "${GREETING:-interpolated-from-nothing}"\n',
    )
    pushed(repo, srv, "czenv")
    assert srv.get("czenv", "/cgi-bin/env") == (200, " 5000\n")
    other = docker_ids("ps", srv.instance, "label=com.docker.compose.service=other")
    assert (
        run(["docker", "exec", other[0], "sh", "-c", "echo $GREETING"]).stdout
        == "interpolated-from-nothing\n"
    )

    # The app's own value reaches the routed service by name; it never touches the disk.
    ok(srv, keys["alice"], "config:set", "czenv", "GREETING=app-value-4711", "--no-restart")
    repo.write(
        "docker-compose.yml",
        WEB + "    environment: [GREETING]\n"
        "    command: [sh, -c, 'sleep 3; exec httpd -f -p 5000 -h /www']\n",
    )
    repo.commit("slow start")
    push = repo.start_push(srv.remote("czenv"))
    found = _compose_file_while_deploying(srv.data_dir / "tmp", "czenv")
    _, err = push.communicate(timeout=120)
    assert push.returncode == 0, err.decode()
    assert '"GREETING": null' in found and "app-value-4711" not in found, found
    assert srv.get("czenv", "/cgi-bin/env") == (200, "app-value-4711 5000\n")
    for path in (srv.data_dir / "compose").glob("*.json"):
        assert "app-value-4711" not in path.read_text()


def _compose_file_while_deploying(work: Path, app: str) -> str:
    """The rewritten compose file of the deploy in progress, read while it runs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in work.glob(f"build-{app}-*/src/.rivetr-compose.json"):
            text = path.read_text()
            if '"ports"' in text:  # the file compose up runs (build's has no ports)
                return text
        time.sleep(0.05)
    raise AssertionError("the deploy wrote no compose file")


def test_dockerfile_builds_run_with_the_default_network_and_no_host_mounts(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """A guard rather than a regression (this already held): a RUN step of a developer's
    Dockerfile, built as the app or as a compose service, sees neither the Docker socket nor
    a host path, and has a network namespace of its own (no docker0 of the host)."""
    host_file = srv.data_dir / "rivetr.db"  # the server's database, on the host
    assert host_file.exists()
    probe = COMPOSE_DOCKERFILE.replace(
        "EXPOSE",
        "RUN ls /sys/class/net > /www/nets; test -e /var/run/docker.sock && "
        f"echo socket >> /www/nets; test -e {host_file} && echo host >> /www/nets; "
        "true\nEXPOSE",
    )
    ok(srv, keys["alice"], "apps:create", "czbuild")
    srv.cli("access", "grant", "bob", "czbuild")
    pushed(AppRepo(workdir / "build", keys["bob"], dockerfile=probe), srv, "czbuild")
    group = compose_repo(workdir / "group", keys["alice"], WEB)
    (group.path / "app" / "Dockerfile").write_text(probe)
    group.commit("probe")
    pushed(group, srv, "czbuildgroup")
    for app in ("czbuild", "czbuildgroup"):
        status, nets = srv.get(app, "/nets")
        assert status == 200 and "eth0" in nets.split(), nets
        assert "docker0" not in nets and "socket" not in nets and "host" not in nets, nets


def test_destroying_a_compose_app_removes_its_networks_volumes_and_state_files(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = compose_repo(
        workdir / "gone",
        keys["alice"],
        WEB + "    volumes: [data:/data]\nnetworks:\n  back: {}\nvolumes:\n  data: {}\n",
    )
    pushed(repo, srv, "czgone")
    prefix = f"rivetr-{srv.instance}-czgone-"

    def leftovers() -> dict[str, list[str]]:
        names = {
            kind: run(["docker", kind, "ls", "--format", "{{.Name}}"]).stdout.split()
            for kind in ("network", "volume")
        }
        return {
            **{k: [n for n in v if n.startswith(prefix)] for k, v in names.items()},
            "state": [p.name for p in (srv.data_dir / "compose").glob(f"{prefix}*")],
        }

    before = leftovers()
    assert before["network"] and before["volume"] and before["state"], before
    out = ok(srv, keys["alice"], "apps:destroy", "czgone", "--confirm", "czgone", "--purge-data")
    assert f"removed the volumes of czgone: {prefix}data" in out
    assert leftovers() == {"network": [], "volume": [], "state": []}
    assert docker_ids("ps", srv.instance, "label=rivetr.app=czgone") == []


def test_an_admin_allows_exactly_one_bind_mount_and_no_pushed_file_can_widen_it(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    shared = workdir / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("from the host\n")
    ok(srv, keys["alice"], "apps:create", "czbind")
    srv.cli("access", "grant", "bob", "czbind")
    mount = f"{shared}:/www/shared"
    repo = compose_repo(workdir / "bind", keys["bob"], WEB + f"    volumes: ['{mount}:ro']\n")
    refused = repo.push(srv.remote("czbind"))
    assert f'"volumes: {mount}:ro" is not allowed' in refused.stderr, refused.stderr
    assert "an admin can allow one exactly with compose:allow" in refused.stderr

    # Only an admin may allow it: a developer's compose:allow is refused.
    assert "admin" in fails(srv, keys["bob"], "compose:allow", "czbind", f"binds={mount}:ro")
    assert "HOST:CONTAINER[:ro]" in fails(
        srv, keys["alice"], "compose:allow", "czbind", "binds=../etc:/x"
    )
    ok(srv, keys["alice"], "compose:allow", "czbind", f"binds={mount}:ro")
    assert f"compose binds:  {mount}:ro" in ok(srv, keys["alice"], "apps:info", "czbind")
    repo.commit("again, now allowed")
    pushed(repo, srv, "czbind")
    assert srv.get("czbind", "/shared/hello.txt") == (200, "from the host\n")

    # Read-write, or any other path, is still refused.
    for widened in (f"{mount}", f"{mount}:rw", f"{shared.parent}:/www/shared:ro"):
        repo.write("docker-compose.yml", WEB + f"    volumes: ['{widened}']\n")
        repo.commit(f"widen to {widened}")
        result = repo.push(srv.remote("czbind"))
        assert f'"volumes: {widened}" is not allowed' in result.stderr, result.stderr
    assert srv.get("czbind", "/shared/hello.txt") == (200, "from the host\n")
