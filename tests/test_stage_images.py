"""Docker's legacy builder keeps the build stage of a multi-stage build as an untagged
image (~650 MB for the Go recipe). The built-in builder labels it with its deployment
(recipe.stage_end), and it goes with its release: at keep_releases pruning, when the deploy
fails, at apps:destroy; the dependency layers a newer build shares stay cached."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.base_images import base_images, image_env
from tests.conftest import running_server
from tests.helpers import AppRepo, Key, Server, docker_ids, run
from tests.lang_apps import SourceRepo, cached, go_files
from tests.test_admin_verbs import ok

pytestmark = pytest.mark.docker
APP = "stgo"


@pytest.fixture(scope="module")
def srv(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key]
) -> Iterator[Server]:
    env = {**image_env(base_images()), "RIVETR_KEEP_RELEASES": "1"}
    yield from running_server(tmp_path_factory.mktemp("st") / "data", keys, env=env)


def labelled(server: Server, app: str) -> dict[str, str]:
    """Every image labelled with the app (untagged, intermediate or not): id -> deployment."""
    ids = run(
        [
            "docker",
            "images",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            f"label=rivetr.instance={server.instance}",
            "--filter",
            f"label=rivetr.app={app}",
        ]
    ).stdout.split()
    if not ids:
        return {}
    # check=False: one may be removed (by a prune in the background) since it was listed.
    out = run(
        [
            "docker",
            "image",
            "inspect",
            "-f",
            '{{.Id}} {{index .Config.Labels "rivetr.deployment"}}',
            *sorted(set(ids)),
        ],
        check=False,
    ).stdout
    return dict(line.split() for line in out.splitlines())


def release(server: Server, app: str) -> str:
    """The deployment id of the app's newest release image."""
    prefix = f"rivetr-{server.instance}/{app}:"
    tags = [t.removeprefix(prefix) for t in docker_ids("images", server.instance)]
    return str(max(int(t) for t in tags if t.isdigit()))


def stages_become(server: Server, app: str, deployments: set[str]) -> set[str]:
    """The deployments of the app's stage images once pruning (in the background) is done."""
    deadline = time.monotonic() + 30
    while (found := set(labelled(server, app).values())) != deployments:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return found


def pushed(repo: SourceRepo, server: Server, cached_step: str) -> str:
    """Push, check `cached_step` reused its layer; the new release's deployment id once
    the releases beyond keep_releases (1) and their stages are pruned."""
    result = repo.push(server.remote(APP))
    assert result.returncode == 0, result.stderr
    assert cached(result.stderr, cached_step), result.stderr
    new = release(server, APP)
    assert stages_become(server, APP, {new}) == {new}
    return new


def test_go_stage_images_go_with_their_release_and_the_dependency_cache_stays(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = SourceRepo(workdir / "go", alice, go_files("hello from st"))
    first = repo.push(srv.remote(APP))
    assert first.returncode == 0, first.stderr
    one = release(srv, APP)
    assert set(labelled(srv, APP).values()) == {one}  # the build stage, labelled

    # keep_releases = 1: the first release's image goes, and its build stage with it.
    repo.put(go_files("code only"))
    repo.commit("code only")
    two = pushed(repo, srv, "RUN go mod download")
    assert two != one
    assert srv.get(APP) == (200, "code only uid=10001\n")

    # The same tree again: the label names another deployment, every other step is cached
    # (the generated Dockerfile is not in what `COPY . ./` copies), and the new stage shares
    # the compiled binary's layer with the one removed.
    repo.commit("no change")
    three = pushed(repo, srv, "RUN go build")

    # A deploy that fails after its build removes its stage; the layers the removed first
    # stage shared with the kept one (the module download) are still the cache.
    repo.put({**go_files("never live"), "Procfile": "web: exit 3\n"})
    repo.commit("exits at once")
    failed = repo.push(srv.remote(APP))
    assert failed.returncode != 0
    assert cached(failed.stderr, "RUN go mod download"), failed.stderr
    assert "Deploy failed at" in failed.stderr
    assert set(labelled(srv, APP).values()) == {three}

    ok(srv, alice, "apps:destroy", APP, "--confirm", APP)
    assert labelled(srv, APP) == {}
    assert not [t for t in docker_ids("images", srv.instance) if f"/{APP}:" in t]


def test_with_build_time_env_the_go_stage_is_removed_at_once(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """Its history holds the build args' values (`|1 NAME=value /bin/sh -c ...`), as the
    final image's intermediates do, which the build removes: so it goes with them."""
    alice, app, value = keys["alice"], "stgoenv", "st-build-time-value"
    ok(srv, alice, "apps:create", app)
    ok(srv, alice, "config:set", app, f"GREETING={value}")
    ok(srv, alice, "builds:set", app, "env=GREETING")
    repo = SourceRepo(workdir / "goenv", alice, go_files("hello with env"))
    result = repo.push(srv.remote(app))
    assert result.returncode == 0, result.stderr
    assert "ARG GREETING" in result.stderr
    assert labelled(srv, app) == {}
    steps = re.findall(r" ---> ([0-9a-f]{12})\b", result.stderr)
    assert len(steps) > 10, result.stderr
    for image in steps:  # every step's image is gone, or a base image without the value
        history = run(["docker", "history", "--no-trunc", image], check=False)
        assert value not in history.stdout, image
    assert srv.get(app) == (200, "hello with env uid=10001\n")


# An app's own Dockerfile: `pages` copies from `tools`' shell and is built FROM it, the image
# only copies from `pages`. So `pages` ends labelled (dockerfile_stages); `tools` is its parent.
OWN_DOCKERFILE = """\
FROM scratch AS tools
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
FROM tools AS pages
ARG GREETING
COPY www /www
RUN test -n "$GREETING" && echo "with greeting" > /www/built.txt || echo plain > /www/built.txt
FROM scratch
COPY busybox /bin/busybox
COPY --from=pages /www /www
EXPOSE 5000
CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]
"""


def test_an_apps_own_build_stages_go_with_their_release(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """Without the label, every push left the `pages` stage behind as an untagged image."""
    alice, app = keys["alice"], "stdocker"
    ok(srv, alice, "apps:create", app)
    repo = AppRepo(workdir / "own", alice, OWN_DOCKERFILE)
    second = stages_follow_releases(srv, app, repo, "www/index.html", "stage pages is")
    assert cached(second, "--install"), second  # `tools` is still the cache


def stages_follow_releases(srv: Server, app: str, repo: AppRepo, page: str, which: str) -> str:
    """Push twice (the second changes `page`): each time the new release's stage (`which`,
    as the push names it) is the only one; none after apps:destroy. The second push's
    output."""
    first = repo.push(srv.remote(app))
    assert first.returncode == 0, first.stderr
    assert f"build {which} labelled to go with this release" in first.stderr
    one = release(srv, app)
    assert set(labelled(srv, app).values()) == {one}
    assert srv.get(app, "/built.txt") == (200, "plain\n")
    repo.write(page, "hello v2\n")
    repo.commit("v2")
    second = repo.push(srv.remote(app))
    assert second.returncode == 0, second.stderr
    two = release(srv, app)
    assert stages_become(srv, app, {two}) == {two}  # keep_releases = 1
    assert srv.get(app) == (200, "hello v2\n")
    ok(srv, repo.key, "apps:destroy", app, "--confirm", app)
    assert labelled(srv, app) == {}
    return second.stderr


def test_with_build_time_env_an_apps_own_stage_is_removed_at_once(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """The `pages` stage's history holds the build-time value (`|1 GREETING=...`); before
    the label, it stayed on disk as an untagged image after every push."""
    alice, app, value = keys["alice"], "stdockerenv", "st-own-build-time-value"
    ok(srv, alice, "apps:create", app)
    ok(srv, alice, "config:set", app, f"GREETING={value}")
    ok(srv, alice, "builds:set", app, "env=GREETING")
    repo = AppRepo(workdir / "ownenv", alice, OWN_DOCKERFILE)
    result = repo.push(srv.remote(app))
    assert result.returncode == 0, result.stderr
    assert labelled(srv, app) == {}
    steps = re.findall(r" ---> ([0-9a-f]{12})\b", result.stderr)
    assert len(steps) > 5, result.stderr
    for image in steps:  # every step's image is gone, or holds no value
        history = run(["docker", "history", "--no-trunc", image], check=False)
        assert value not in history.stdout, image
    assert srv.get(app, "/built.txt") == (200, "with greeting\n")
    ok(srv, alice, "apps:destroy", app, "--confirm", app)


def test_a_compose_services_build_stages_go_with_their_release(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """docker-compose builds with the legacy builder too: the same stage, the same leak."""
    alice, app = keys["alice"], "stcompose"
    ok(srv, alice, "apps:create", app)
    repo = AppRepo(workdir / "compose", alice, OWN_DOCKERFILE)
    (repo.path / "app").mkdir()
    repo.git("mv", "Dockerfile", "busybox", "www", "app/")
    repo.write("docker-compose.yml", "services:\n  web:\n    build: ./app\n")
    repo.commit("a compose app")
    stages_follow_releases(srv, app, repo, "app/www/index.html", "stage web/pages is")
