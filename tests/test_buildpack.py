"""The built-in builder end to end: Python, Node, Go and a static site with a build step,
each pushed with no Dockerfile, built FROM the local Debian base images
(scripts/build-test-images), live and answering as a non-root user; a code-only push reuses
the dependency layer; missing start commands and version mismatches fail with advice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.base_images import base_images, image_env
from tests.conftest import running_server
from tests.helpers import Key, Server, nginx_image
from tests.lang_apps import (
    SourceRepo,
    cached,
    go_files,
    node_files,
    python_files,
    site_files,
    wheel_files,
)
from tests.test_admin_verbs import ok
from tests.test_stage_images import labelled, release

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def srv(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key]
) -> Iterator[Server]:
    env = image_env(base_images())
    env["RIVETR_STATIC_SERVER_IMAGE"] = nginx_image(tmp_path_factory.mktemp("nginx"))
    yield from running_server(tmp_path_factory.mktemp("lb") / "data", keys, env=env)


def live(repo: SourceRepo, server: Server, app: str) -> str:
    result = repo.push(server.remote(app))
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_python_app_goes_live_and_a_code_only_push_reuses_the_dependency_layer(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = SourceRepo(workdir / "py", keys["alice"], python_files())
    out = live(repo, srv, "lbpython")
    assert "build type: buildpack/python (found requirements.txt)" in out
    assert "start: python app.py (found app.py)" in out
    assert srv.get("lbpython") == (200, "hello from python uid=10001\n")
    repo.put(python_files("hello again"))
    repo.commit("code only")
    out = live(repo, srv, "lbpython")
    assert cached(out, "RUN pip install -r requirements.txt"), out
    assert not cached(out, "COPY --chown"), out
    assert srv.get("lbpython") == (200, "hello again uid=10001\n")


def test_python_app_with_a_vendored_wheel_installs_it_without_an_index(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = SourceRepo(workdir / "wheel", keys["alice"], wheel_files())
    out = live(repo, srv, "lbwheel")
    assert "Successfully installed greeting-1.0" in out
    assert srv.get("lbwheel") == (200, "hello from a wheel uid=10001\n")


def test_node_app_runs_its_build_script_caches_npm_ci_and_gets_build_time_env(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice, app = keys["alice"], "lbnode"
    repo = SourceRepo(workdir / "node", alice, node_files())
    out = live(repo, srv, app)
    assert "build type: buildpack/node (found package.json)" in out
    assert "dependencies: npm ci --include=dev; build: npm run build" in out
    assert srv.get(app) == (200, "hello from node built with no build-time GREETING uid=10001\n")
    repo.put(node_files("hello again from node"))
    repo.commit("code only")
    out = live(repo, srv, app)
    assert cached(out, "RUN npm ci"), out
    assert not cached(out, "RUN npm run build"), out
    # Build-time env reaches the build script (steps after its ARG are then not cached:
    # the server removes the intermediate images that hold the value, as for Dockerfiles).
    ok(srv, alice, "config:set", app, "GREETING=build-time-value")
    ok(srv, alice, "builds:set", app, "env=GREETING")
    repo.commit("with build-time env")
    live(repo, srv, app)
    assert srv.get(app) == (
        200,
        "hello again from node built with a build-time GREETING uid=10001\n",
    )


def test_go_app_is_a_static_binary_on_the_runtime_image(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = SourceRepo(workdir / "go", keys["alice"], go_files())
    out = live(repo, srv, "lbgo")
    assert "build type: buildpack/go (found go.mod)" in out
    assert srv.get("lbgo") == (200, "hello from go uid=10001\n")
    repo.put(go_files("hello again from go"))
    repo.commit("code only")
    out = live(repo, srv, "lbgo")
    assert cached(out, "RUN go mod download"), out
    assert srv.get("lbgo") == (200, "hello again from go uid=10001\n")


def test_static_site_with_a_build_step_is_built_then_served_by_nginx(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice, app = keys["alice"], "lbsite"
    ok(srv, alice, "apps:create", app)
    ok(srv, alice, "builds:set", app, "publish_dir=dist")
    repo = SourceRepo(workdir / "site", alice, site_files())
    out = live(repo, srv, app)
    assert "build type: buildpack/static (found package.json and the app's publish_dir" in out
    assert srv.get(app) == (200, "<h1>hello from a built site</h1>\n")
    assert srv.get(app, "/.rivetr/health") == (200, "ok\n")
    # The node build stage's image is labelled with its deployment (it goes with it).
    assert list(labelled(srv, app).values()) == [release(srv, app)]


def test_no_start_command_and_a_python_version_mismatch_fail_at_building_with_advice(
    srv: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = SourceRepo(workdir / "nostart", keys["alice"], {"requirements.txt": "", "lib.py": ""})
    result = repo.push(srv.remote("lbnostart"))
    assert result.returncode != 0
    assert (
        "Deploy failed at building: no start command for this Python app: add a Procfile "
        "with a web line (web: gunicorn app:app), or an app.py or main.py"
    ) in result.stderr
    repo.put({"app.py": "print('never runs')\n", ".python-version": "3.12\n"})
    repo.commit("asks for Python 3.12; the test image has 3.11")
    result = repo.push(srv.remote("lbnostart"))
    assert result.returncode != 0
    assert (
        "this image has Python 3.11 but the app asks for 3.12 (.python-version); set "
        "python_image to an image with Python 3.12, or change .python-version"
    ) in result.stderr
    assert "Deploy failed at building" in result.stderr
