"""Every build type that can run here, end to end through a real push: dockerfile variants,
static (SPA fallback, gzip, health endpoint), and nixpacks/railpack/pack through stand-in
CLIs (the real ones cannot be installed on this machine)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.helpers import (
    AppRepo,
    Key,
    Server,
    docker_ids,
    nginx_image,
    read_until,
    run,
    stand_in_clis,
    wait_until,
)
from tests.test_admin_verbs import ok, verb

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(directory of the stand-in CLIs, directory they record into)."""
    base = tmp_path_factory.mktemp("tools")
    return stand_in_clis(base / "bin", base / "record"), base / "record"


@pytest.fixture(scope="module")
def srv(
    docker_engine: None,
    tmp_path_factory: pytest.TempPathFactory,
    keys: dict[str, Key],
    tools: tuple[Path, Path],
) -> Iterator[Server]:
    image = nginx_image(tmp_path_factory.mktemp("nginx"))
    bin_dir, _ = tools
    yield from running_server(
        tmp_path_factory.mktemp("bt") / "data",
        keys,
        env={
            "RIVETR_STATIC_SERVER_IMAGE": image,
            # The stand-in CLIs' tests: language manifests go to nixpacks here.
            "RIVETR_BUILDPACK_BUILDER": "nixpacks",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        },
    )


def pushed(repo: AppRepo, server: Server, app: str) -> str:
    result = repo.push(server.remote(app))
    assert result.returncode == 0, result.stderr
    return result.stderr


def get(server: Server, app: str, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.proxy_port}{path}",
        headers={"Host": f"{app}.localhost", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


# --- dockerfile -------------------------------------------------------------------------------


MULTI_STAGE = """\
FROM scratch AS base
COPY busybox /bin/busybox
COPY www /www
FROM base AS prod
EXPOSE 5000
CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]
FROM base AS broken
CMD ["/bin/busybox", "false"]
"""


def test_dockerfile_variants_containerfile_context_dir_path_target_and_cache(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "df", keys["alice"])
    repo.git("mv", "Dockerfile", "Containerfile")
    repo.commit("a Containerfile")
    out = pushed(repo, srv, "dfvariants")
    assert "build type: dockerfile (found Containerfile)" in out
    assert srv.get("dfvariants") == (200, "hello v1\n")

    # The app in a subdirectory, its Dockerfile elsewhere, a multi-stage file whose last
    # stage would fail: only the context dir is sent, and only the target stage is built.
    web = repo.path / "services" / "web"
    web.mkdir(parents=True)
    repo.git("mv", "busybox", "www", "services/web/")
    (repo.path / "docker").mkdir()
    repo.write("docker/web.Dockerfile", MULTI_STAGE)
    repo.write("services/web/www/index.html", "from the context dir\n")
    repo.write("Containerfile", "FROM scratch\nCOPY nothing-here /\n")  # ignored now
    repo.commit("monorepo layout")
    srv.cli(
        "apps",
        "set",
        "dfvariants",
        "dockerfile=docker/web.Dockerfile",
        "build_context=services/web",
        "build_target=prod",
    )
    out = pushed(repo, srv, "dfvariants")
    assert "build type: dockerfile (found docker/web.Dockerfile)" in out
    assert srv.get("dfvariants") == (200, "from the context dir\n")

    # The layer cache is kept between deploys, unless the app asks for no cache.
    repo.commit("again")
    assert "Using cache" in pushed(repo, srv, "dfvariants")
    srv.cli("apps", "set", "dfvariants", "build_no_cache=true")
    repo.commit("once more")
    out = pushed(repo, srv, "dfvariants")
    assert "Using cache" not in out and "Step 2/" in out
    show = srv.cli("apps", "show", "dfvariants").stdout
    assert "no_cache true" in show and "target prod" in show, show  # apps:info's rendering


def test_an_unknown_build_type_is_refused_and_nothing_to_build_fails_clearly(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "none", keys["alice"])
    pushed(repo, srv, "nothing")
    bad = srv.cli("apps", "set", "nothing", "build_type=heroku", check=False)
    assert bad.returncode != 0 and "'heroku' is not a build type" in bad.stderr
    repo.git("rm", "-q", "Dockerfile", "www/index.html")
    repo.write("notes.txt", "no app here\n")
    repo.commit("nothing to build")
    result = repo.push(srv.remote("nothing"))
    assert result.returncode != 0
    assert "Deploy failed at building: cannot tell how to build this commit" in result.stderr
    assert srv.get("nothing") == (200, "hello v1\n")


# --- static -----------------------------------------------------------------------------------


def static_repo(path: Path, key: Key) -> AppRepo:
    repo = AppRepo(path, key)
    repo.git("rm", "-q", "-r", "Dockerfile", "www", "busybox")
    repo.write("package.json", '{"scripts": {"build": "vite build"}}\n')
    repo.write("vite.config.js", "export default {}\n")
    (repo.path / "dist" / "assets").mkdir(parents=True)
    repo.write("dist/index.html", "<!doctype html><div id=app>spa shell</div>\n")
    repo.write("dist/assets/app.js", "console.log('a fairly long line of javascript');\n" * 40)
    repo.commit("a vite site, built")
    return repo


def test_static_site_with_spa_fallback_gzip_and_health_endpoint(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = static_repo(workdir / "site", keys["alice"])
    out = pushed(repo, srv, "spa")
    assert "build type: static (found vite.config.js (Vite) and its built site in dist/)" in out
    assert "GET /.rivetr/health ok" in out  # the deploy's health check used the endpoint
    status, _, body = get(srv, "spa", "/")
    assert (status, body) == (200, b"<!doctype html><div id=app>spa shell</div>\n")
    # SPA fallback: a client-side route answers the app's shell.
    status, _, body = get(srv, "spa", "/users/42/settings")
    assert status == 200 and b"spa shell" in body
    status, headers, body = get(srv, "spa", "/assets/app.js", **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    assert gzip.decompress(body).startswith(b"console.log(")
    assert get(srv, "spa", "/.rivetr/health")[2] == b"ok\n"
    # Served by the configured server image; no env var or build value in the image.
    [container] = docker_ids("ps", srv.instance, "label=rivetr.app=spa")
    image = run(["docker", "inspect", "-f", "{{.Config.Image}}", container]).stdout.strip()
    env = (
        json.loads(run(["docker", "image", "inspect", "-f", "{{json .Config.Env}}", image]).stdout)
        or []
    )
    assert [e for e in env if not e.startswith("PATH=")] == [], env
    history = run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image]).stdout
    assert " ENV " not in history and " ARG " not in history
    # A restart (a fresh container of the release) finds its port and health endpoint too.
    restarted = ok(srv, keys["alice"], "ps:restart", "spa")
    assert "GET /.rivetr/health ok" in restarted
    assert get(srv, "spa", "/users/7")[0] == 200


def test_an_app_set_to_static_fails_instead_of_building_its_dockerfile(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "notstatic", keys["alice"])
    pushed(repo, srv, "notstatic")
    # Over SSH, as an admin verb (the local CLI's `apps set` takes the same values).
    bad = verb(srv, keys["alice"], "builds:set", "notstatic", "type=heroku")
    assert bad.returncode != 0 and "'heroku' is not a build type" in bad.stderr
    ok(srv, keys["alice"], "builds:set", "notstatic", "type=static", "publish_dir=public")
    info = ok(srv, keys["alice"], "apps:info", "notstatic")
    assert "build:          static, publish_dir public" in info
    repo.commit("redeploy as static")
    result = repo.push(srv.remote("notstatic"))
    assert result.returncode != 0
    assert "public/index.html is not in the pushed commit" in result.stderr
    assert "Step 1/" not in result.stderr.split("Building...")[-1]


# --- nixpacks, railpack, pack through stand-in CLIs --------------------------------------------


def builder_repo(path: Path, key: Key, marker: str) -> AppRepo:
    repo = AppRepo(path, key)
    repo.git("rm", "-q", "Dockerfile")
    repo.write(marker, "# build config\n" if marker.endswith(".toml") else "{}\n")
    repo.commit(f"a {marker} project")
    return repo


@pytest.mark.parametrize(
    ("tool", "marker", "expected"),
    [
        ("nixpacks", "package.json", ["build", "{src}", "--name", "{tag}"]),
        ("railpack", "railpack.toml", ["build", "--name", "{tag}", "--progress", "plain", "{src}"]),
        (
            "pack",
            "project.toml",
            [
                "build",
                "{tag}",
                "--path",
                "{src}",
                "--builder",
                "paketobuildpacks/builder-jammy-base",
                "--pull-policy",
                "if-not-present",
            ],
        ),
    ],
)
def test_stand_in_cli_gets_the_documented_arguments_and_its_output_streams(
    srv: Server,
    keys: dict[str, Key],
    workdir: Path,
    tools: tuple[Path, Path],
    tool: str,
    marker: str,
    expected: list[str],
) -> None:
    _, record = tools
    app = f"standin-{tool}"
    repo = builder_repo(workdir / app, keys["alice"], marker)
    (record / f"{tool}.wait").touch()
    try:
        push = repo.start_push(srv.remote(app))
        seen = read_until(push, f"{tool} stand-in: planning".encode())
        # The first line arrived while the CLI was still running: it waits for this file.
        assert b"the test saw the first line" not in seen
        (record / f"{tool}.go").touch()
        rest = push.communicate(timeout=180)[1]
    finally:
        (record / f"{tool}.wait").unlink()
    out = (seen + rest).decode()
    assert push.returncode == 0, out
    assert f"build type: {tool} (found {marker}" in out
    assert f"running {tool} build" in out
    recorded = json.loads((record / f"{tool}.json").read_text())
    tag = f"rivetr-{srv.instance}/{app}:"
    argv = recorded["argv"]
    src = next(a for a in argv if a.endswith("/src"))
    shape = [a.replace(src, "{src}") for a in argv]
    shape = ["{tag}" if a.startswith(tag) else a for a in shape]
    assert shape == expected
    assert srv.get(app) == (200, "hello v1\n")


def test_a_missing_or_failing_builder_cli_fails_at_building_naming_the_tool(
    srv: Server, keys: dict[str, Key], workdir: Path, tools: tuple[Path, Path]
) -> None:
    bin_dir, record = tools
    repo = builder_repo(workdir / "missing", keys["alice"], "railpack.toml")
    hidden = bin_dir / "railpack.hidden"
    shutil.move(bin_dir / "railpack", hidden)
    try:
        result = repo.push(srv.remote("missingcli"))
    finally:
        shutil.move(hidden, bin_dir / "railpack")
    assert result.returncode != 0
    assert (
        "Deploy failed at building: build type railpack needs the railpack CLI, which is "
        "not installed on this server; install it (curl -sSL https://railpack.com/"
        "install.sh | sh"
    ) in result.stderr
    (record / "railpack.fail").touch()
    try:
        result = repo.push(srv.remote("missingcli"))
    finally:
        (record / "railpack.fail").unlink()
    assert result.returncode != 0
    assert (
        "Deploy failed at building: railpack exited with code 7: railpack stand-in: "
        "failing on purpose"
    ) in result.stderr
    assert docker_ids("ps", srv.instance, "label=rivetr.app=missingcli") == []


def test_the_app_setting_overrides_detection_and_picks_the_builder(
    srv: Server, keys: dict[str, Key], workdir: Path, tools: tuple[Path, Path]
) -> None:
    _, record = tools
    repo = AppRepo(workdir / "override", keys["alice"])  # has a Dockerfile
    pushed(repo, srv, "override")
    srv.cli("apps", "set", "override", "build_type=pack", "build_no_cache=true")
    repo.commit("build it with pack")
    out = pushed(repo, srv, "override")
    assert "build type: pack (set by the app's build_type setting)" in out
    argv = json.loads((record / "pack.json").read_text())["argv"]
    assert argv[-1] == "--clear-cache"


# --- compose ----------------------------------------------------------------------------------


COMPOSE = """\
version: "3.8"
services:
  web:
    build: ./app
    container_name: fixed-name
    ports: ["8000:5000"]
    environment:
      GREETING: from-compose
  worker:
    build: ./app
    command: ["sh", "-c", "while true; do wget -qO /www/peer.txt http://web:5000/; sleep 1; done"]
"""

COMPOSE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY www /www
RUN printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho "$GREETING $PORT"\\n' \
    > /www/cgi-bin-env && mkdir -p /www/cgi-bin && mv /www/cgi-bin-env /www/cgi-bin/env \
    && chmod +x /www/cgi-bin/env
EXPOSE 5000
CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]
"""


def compose_repo(path: Path, key: Key, compose: str) -> AppRepo:
    """The busybox app in app/, built by each service of `compose` (./app)."""
    repo = AppRepo(path, key, dockerfile=COMPOSE_DOCKERFILE)
    (repo.path / "app").mkdir()
    repo.git("mv", "Dockerfile", "busybox", "www", "app/")
    repo.write("docker-compose.yml", compose)
    repo.commit("a compose app")
    return repo


def names_of(containers: list[str]) -> str:
    return run(["docker", "inspect", "-f", "{{.Name}}", *containers]).stdout


def test_compose_deploys_two_services_as_a_group_and_switches_like_any_app(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = compose_repo(workdir / "group", keys["alice"], COMPOSE)
    out = pushed(repo, srv, "group")
    assert "build type: compose (found docker-compose.yml)" in out
    assert "services web, worker; routing web" in out
    assert srv.get("group") == (200, "hello v1\n")
    # Env injected into the routed service, the file's own env kept.
    assert srv.get("group", "/cgi-bin/env") == (200, "from-compose 5000\n")
    prefix = f"rivetr-{srv.instance}-group-"
    first = docker_ids("ps", srv.instance, "label=rivetr.app=group")
    assert len(first) == 2  # web and worker, both labelled as this deployment
    # The worker reaches web by its service name, on the group's own network.
    worker = next(c for c in first if "worker" in names_of([c]))
    assert wait_until(
        lambda: (
            run(["docker", "exec", worker, "cat", "/www/peer.txt"], check=False).stdout
            == "hello v1\n"
        ),
        20,
    )
    # Nothing published beyond 127.0.0.1 (the file's 8000:5000 is dropped), no fixed name.
    ports = run(
        ["docker", "ps", "--filter", "label=rivetr.app=group", "--format", "{{.Names}} {{.Ports}}"]
    ).stdout
    assert "0.0.0.0" not in ports and "fixed-name" not in ports, ports

    repo.write("app/www/index.html", "hello v2\n")
    repo.commit("second")
    pushed(repo, srv, "group")
    assert srv.get("group") == (200, "hello v2\n")
    # The previous group (both services and its network) goes once its watch window ends.
    assert wait_until(lambda: not set(first) & set(docker_ids("ps", srv.instance)), 30)
    repo.commit("third")
    pushed(repo, srv, "group")  # sweeps the networks of retired groups
    networks = run(["docker", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
    mine = [n for n in networks if n.startswith(prefix)]
    assert len(mine) <= 2, mine  # the live group's, and the one still in its watch window

    # A restart of the server keeps the whole live group, not only its routed container.
    live_id = next(
        line.split()[0][1:]
        for line in srv.cli("deploys", "list", "group").stdout.splitlines()[1:]
        if line.split()[1] == "running"
    )
    group = docker_ids("ps", srv.instance, f"label=rivetr.deployment={live_id}")
    assert len(group) == 2
    srv.stop()
    srv.start()
    assert srv.get("group") == (200, "hello v2\n")
    running = docker_ids("ps", srv.instance, "status=running")
    assert set(group) <= set(running), (group, running)
    # Start-up removed the other groups' leftovers, networks included.
    networks = run(["docker", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
    assert [n for n in networks if n.startswith(prefix)] == [f"{prefix}{live_id}_default"]


def test_compose_build_failure_leaves_no_group_behind(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = compose_repo(
        workdir / "badgroup",
        keys["alice"],
        COMPOSE.replace(
            "  worker:\n    build: ./app\n", "  worker:\n    image: rivetr-no-such-image\n"
        ),
    )
    result = repo.push(srv.remote("badgroup"))
    assert result.returncode != 0
    assert "Deploy failed at starting: compose up exited" in result.stderr
    assert docker_ids("ps", srv.instance, "label=rivetr.app=badgroup") == []
    networks = run(["docker", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
    assert not [n for n in networks if n.startswith(f"rivetr-{srv.instance}-badgroup-")]
