"""The push-to-deploy spine on Podman (`runtime = "podman"`): the same end-to-end tests as on
Docker, run against a server whose runtime is Podman through its Docker-compatible API.

The tests' own `docker` commands talk to the server's Podman service (DOCKER_HOST), so they
see what Podman runs; the module removes what it made with the podman CLI at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rivetr_git.runtime.podman import host_ulimits
from tests import test_app_network
from tests import test_push_deploy as spine
from tests.base_images import base_images, image_env
from tests.conftest import running_server
from tests.helpers import AppRepo, Key, Server, run, stand_in_clis, wait_until
from tests.lang_apps import SourceRepo, cached, go_files, python_files
from tests.test_admin_verbs import ok
from tests.test_build_types import builder_repo, compose_repo

pytestmark = pytest.mark.docker

SPINE: list[Callable[[Server, dict[str, Key], Path], None]] = [
    spine.test_first_push_creates_and_deploys_then_second_push_replaces,
    spine.test_build_failure_keeps_old_release_and_restores_branch,
    spine.test_crashing_app_fails_at_start_or_health,
    spine.test_first_deploy_failure_deletes_the_branch,
    spine.test_build_output_streams_before_the_build_finishes,
    test_app_network.test_apps_cannot_reach_each_other_and_destroy_removes_the_network,
]


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], check=False)


@pytest.fixture(scope="module")
def podman_server(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key]
) -> Iterator[Server]:
    if shutil.which("podman") is None:
        pytest.fail("podman is required: run `make test` or `.ci/run` (scripts/ensure-tools)")
    tools = tmp_path_factory.mktemp("podman-tools")
    bin_dir = stand_in_clis(tools / "bin", tools / "record")
    servers = running_server(
        tmp_path_factory.mktemp("podman") / "data",
        keys,
        env={
            "RIVETR_RUNTIME": "podman",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "RIVETR_BUILDPACK_BUILDER": "nixpacks",  # the stand-in CLI test
            **image_env(base_images(podman=True)),
        },
    )
    srv = next(servers)
    try:
        yield srv
    finally:
        next(servers, None)  # stops the daemon (and its podman service)
        label = f"label=rivetr.instance={srv.instance}"
        left = podman("ps", "-aq", "--filter", label).stdout.split()
        if left:
            podman("rm", "-f", *left)
        images = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        mine = [i for i in images if f"rivetr-{srv.instance}/" in i]
        if mine:
            podman("rmi", "-f", *mine)
        volumes = podman("volume", "ls", "-q", "--filter", label).stdout.split()
        if volumes:
            podman("volume", "rm", "-f", *volumes)
        networks = podman("network", "ls", "--format", "{{.Name}}").stdout.split()
        mine = [n for n in networks if n.startswith(f"rivetr-{srv.instance}-")]
        if mine:
            podman("network", "rm", "-f", *mine)


@pytest.fixture
def on_podman(podman_server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{podman_server.data_dir}/run/podman.sock")
    return podman_server


@pytest.mark.parametrize("test", SPINE, ids=lambda t: t.__name__.removeprefix("test_"))
def test_spine_on_podman(
    test: Callable[[Server, dict[str, Key], Path], None],
    on_podman: Server,
    keys: dict[str, Key],
    workdir: Path,
) -> None:
    test(on_podman, keys, workdir)


def test_podman_runs_the_app_with_explicit_ulimits_and_init(
    on_podman: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "limits", keys["alice"])
    result = repo.push(on_podman.remote("ulimits"))
    assert result.returncode == 0, result.stderr
    assert "runtime podman" in on_podman.log()
    [container] = podman(
        "ps",
        "-q",
        "--filter",
        f"label=rivetr.instance={on_podman.instance}",
        "--filter",
        "label=rivetr.app=ulimits",
    ).stdout.split()
    out = podman("exec", container, "/bin/busybox", "sh", "-c", "ulimit -n; ulimit -u").stdout
    assert [int(v) for v in out.split()] == list(host_ulimits().values())


def test_builder_clis_build_on_the_podman_engine(
    on_podman: Server, keys: dict[str, Key], workdir: Path
) -> None:
    # The stand-in nixpacks runs `docker build`: it must reach Podman, not Docker.
    repo = builder_repo(workdir / "nix", keys["alice"], "package.json")
    result = repo.push(on_podman.remote("nixonpodman"))
    assert result.returncode == 0, result.stderr
    assert "build type: nixpacks" in result.stderr
    assert on_podman.get("nixonpodman") == (200, "hello v1\n")


def test_the_built_in_builder_builds_a_python_app_on_podman(
    on_podman: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """The generated Dockerfile FROM a local Debian image (scripts/build-test-images
    --podman), built by Podman, run as the app's user; a code-only push reuses the layer."""
    repo = SourceRepo(workdir / "lbpodman", keys["alice"], python_files())
    ok(on_podman, keys["alice"], "apps:create", "lbpodman")
    ok(on_podman, keys["alice"], "builds:set", "lbpodman", "type=buildpack")
    result = repo.push(on_podman.remote("lbpodman"))
    assert result.returncode == 0, result.stderr
    assert "build type: buildpack/python (set by the app's build_type setting; found" in (
        result.stderr
    )
    assert on_podman.get("lbpodman") == (200, "hello from python uid=10001\n")
    repo.put(python_files("hello from podman"))
    repo.commit("code only")
    result = repo.push(on_podman.remote("lbpodman"))
    assert result.returncode == 0, result.stderr
    assert cached(result.stderr, "RUN pip install -r requirements.txt"), result.stderr
    assert on_podman.get("lbpodman") == (200, "hello from podman uid=10001\n")


async def test_runtime_auto_picks_docker_then_podman_and_says_which(
    docker_engine: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rivetr_git.daemon import connect_runtime
    from rivetr_git.settings import load_settings

    settings = load_settings(
        env={"RIVETR_RUNTIME": "auto", "RIVETR_DATA_DIR": str(tmp_path / "data")}
    )
    caplog.set_level("INFO")
    runtime = await connect_runtime(settings)
    await runtime.close()
    assert runtime.name == "docker"
    assert "runtime auto: using docker" in caplog.text
    # No Docker engine answers: Podman (a service of the server's own) takes over.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker-here.sock")
    runtime = await connect_runtime(settings)
    try:
        assert runtime.name == "podman"
        assert await runtime.list_containers({"rivetr.instance": "auto-test"}) == []
    finally:
        await runtime.close()
    assert "runtime auto: using podman (no Docker engine answered)" in caplog.text


async def test_build_limits_map_to_podman(tmp_path: Path, docker_engine: None) -> None:
    """build_cpu_limit and build_memory_limit reach Podman's build steps' cgroups."""
    from rivetr_git.runtime.base import BuildSpec
    from rivetr_git.runtime.podman import PodmanRuntime
    from tests.test_build_limits import CGROUP_LIMITS, HEAD, RUN_ID, write_context

    runtime = await PodmanRuntime.launch(tmp_path / "run")
    tag = f"rivetr-test-podman/limits:{RUN_ID}"
    try:
        context = write_context(
            tmp_path / "limits.tar", HEAD + CGROUP_LIMITS.format(marker=f"podman-{RUN_ID}")
        )
        lines: list[str] = []
        await runtime.build(BuildSpec(context, tag, cpus=0.5, memory=64 * 1024**2), lines.append)
        assert "cpu: 50000 100000" in lines, lines
        assert f"memory: {64 * 1024**2}" in lines, lines
    finally:
        await runtime.remove_image(tag)
        await runtime.close()
    assert podman("images", "-q", tag).stdout.strip() == ""
    # Its layers went with it, as they do on Docker (a labelled build stage goes with its
    # release: test_removing_an_image_keeps_the_build_stages_of_other_releases).
    dangling = ["--filter", "dangling=true", "--filter", "label!=rivetr.instance"]
    assert podman("images", "-a", "-q", *dangling).stdout.strip() == ""


async def test_listing_survives_containers_removed_meanwhile(
    tmp_path: Path, docker_engine: None
) -> None:
    """Podman 4.3's list and df endpoints fail as a whole when a container goes away while
    they run ("does not exist in database"). apps:destroy failed that way in CI while the old
    release was being removed; listings now try again until they see a settled engine."""
    import threading
    import time

    from rivetr_git.runtime.podman import PodmanRuntime

    runtime = await PodmanRuntime.launch(tmp_path / "run")
    label = f"rivetr-test-churn={os.getpid()}"
    image = base_images(podman=True)["slim"]
    stop = threading.Event()

    def churn() -> None:  # one-off containers, each removed as soon as it exits
        while not stop.is_set():
            podman("run", "--rm", "--label", label, image, "true")

    churner = threading.Thread(target=churn)
    churner.start()
    listings = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await runtime.list_containers({"rivetr-test-churn": str(os.getpid())})
            await runtime.volume_sizes()
            listings += 1
    finally:
        stop.set()
        churner.join()
        await runtime.close()
    assert listings > 10, listings  # before the fix, a few dozen listings saw a failure
    assert podman("ps", "-aq", "--filter", f"label={label}").stdout.strip() == ""


async def test_removing_an_image_keeps_the_build_stages_of_other_releases(
    tmp_path: Path, docker_engine: None
) -> None:
    """Podman's remove_image prunes untagged layers nothing uses, but not a labelled build
    stage (recipe.stage_end): it belongs to a release still kept, and the next push's build
    takes its cached steps from it. It goes when it is removed itself."""
    from rivetr_git.pipeline.builders.recipe import stage_end
    from rivetr_git.runtime.base import BuildSpec
    from rivetr_git.runtime.podman import PodmanRuntime
    from tests.test_build_limits import HEAD, RUN_ID, write_context

    owner = {"rivetr.instance": f"podtest-{RUN_ID}", "rivetr.app": "kept", "rivetr.deployment": "1"}
    mine = ["--filter", f"label=rivetr.instance=podtest-{RUN_ID}"]
    staged = (
        HEAD.replace("FROM scratch", "FROM scratch AS deps")
        + f'RUN ["/bin/busybox", "touch", "/deps-{RUN_ID}"]\n'
        + stage_end(owner)
        + f"FROM scratch\nCOPY --from=deps /deps-{RUN_ID} /deps\n"
    )
    kept, other = f"rivetr-test-podman/kept:{RUN_ID}", f"rivetr-test-podman/other:{RUN_ID}"
    runtime = await PodmanRuntime.launch(tmp_path / "run")
    try:
        await runtime.build(BuildSpec(write_context(tmp_path / "a.tar", staged), kept), print)
        [stage] = podman("images", "-a", "-q", *mine).stdout.split()
        plain = HEAD + f'RUN ["/bin/busybox", "touch", "/other-{RUN_ID}"]\n'
        await runtime.build(BuildSpec(write_context(tmp_path / "b.tar", plain), other), print)
        await runtime.remove_image(other)
        assert podman("images", "-a", "-q", *mine).stdout.split() == [stage]
        await runtime.remove_image(stage)
        assert podman("images", "-a", "-q", *mine).stdout.split() == []
    finally:
        for image in (kept, other, *podman("images", "-a", "-q", *mine).stdout.split()):
            await runtime.remove_image(image)
        await runtime.close()
    assert podman("images", "-q", kept, other).stdout.strip() == ""


def test_app_limits_map_to_podman(on_podman: Server, keys: dict[str, Key], workdir: Path) -> None:
    """limits:set (memory suffixes, CPUs) reaches Podman as --memory and --cpus would."""
    from tests.test_admin_verbs import ok

    repo = AppRepo(workdir / "limited", keys["alice"])
    result = repo.push(on_podman.remote("plimited"))
    assert result.returncode == 0, result.stderr
    ok(on_podman, keys["alice"], "limits:set", "plimited", "memory=64m", "cpu=0.5")
    label = f"label=rivetr.instance={on_podman.instance}"

    def running() -> list[str]:
        return podman(
            "ps",
            "-q",
            "--filter",
            label,
            "--filter",
            "label=rivetr.app=plimited",
            "--filter",
            "status=running",
        ).stdout.split()

    assert wait_until(lambda: len(running()) == 1, 30)  # the old one leaves after its watch
    [container] = running()
    inspect = podman(
        "inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}", container
    ).stdout.split()
    assert inspect == [str(64 * 1024**2), str(500_000_000)], inspect
    assert on_podman.get("plimited") == (200, "hello v1\n")


def test_compose_on_podman_gets_the_same_rules_and_the_engines_ulimits(
    on_podman: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = compose_repo(
        workdir / "group",
        keys["alice"],
        "services:\n  web:\n    build: ./app\n    privileged: true\n",
    )
    refused = repo.push(on_podman.remote("czpodman"))
    assert refused.returncode != 0
    assert 'service web: "privileged: true" is not allowed' in refused.stderr
    assert podman("ps", "-aq", "--filter", "label=rivetr.app=czpodman").stdout == ""
    # Allowed, it runs on Podman with the explicit ulimits Podman needs.
    repo.write("docker-compose.yml", "services:\n  web:\n    build: ./app\n")
    repo.commit("no privileges")
    result = repo.push(on_podman.remote("czpodman"))
    assert result.returncode == 0, result.stderr
    [container] = podman("ps", "-q", "--filter", "label=rivetr.app=czpodman").stdout.split()
    out = podman("exec", container, "/bin/busybox", "sh", "-c", "ulimit -n; ulimit -u").stdout
    assert [int(v) for v in out.split()] == list(host_ulimits().values())
    # Destroying it removes the group's network from Podman too.
    ok(on_podman, keys["alice"], "apps:destroy", "czpodman", "--confirm", "czpodman")
    networks = podman("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [n for n in networks if f"{on_podman.instance}-czpodman-" in n], networks


def test_volumes_and_log_caps_on_podman(
    on_podman: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """storage:mount on Podman: what one release wrote, the next and `run` see; containers
    get the json-file caps as Podman records them."""
    from tests.test_admin_verbs import verb
    from tests.test_storage import count, counter_app

    app, alice = "stpodman", keys["alice"]
    repo = counter_app(workdir / "counter", alice)
    ok(on_podman, alice, "apps:create", app)
    ok(on_podman, alice, "storage:mount", app, "data:/data")
    assert repo.push(on_podman.remote(app)).returncode == 0
    assert count(on_podman, app) == "1 hello v1"
    repo.write("www/index.html", "hello v2\n")
    repo.commit("v2")
    assert repo.push(on_podman.remote(app)).returncode == 0
    assert count(on_podman, app) == "2 hello v2"
    result = verb(on_podman, alice, "run", app, "cat", "/data/count")
    assert (result.returncode, result.stdout.strip()) == (0, "2"), result.stderr
    volume = f"rivetr-{on_podman.instance}-{app}-data"
    label = f"label=rivetr.app={app}"
    mine = ["--filter", f"label=rivetr.instance={on_podman.instance}", "--filter", label]
    assert podman("volume", "ls", "-q", *mine).stdout.split() == [volume]
    running = podman("ps", "-q", "--filter", label, "--filter", "status=running").stdout.split()
    log_config = podman("inspect", "-f", "{{json .HostConfig.LogConfig}}", running[-1]).stdout
    # Podman keeps max-size (10m = 10.49 MB, decimal) and has one log file, no max-file.
    assert '"Size":"10.49MB"' in log_config, log_config
    out = ok(on_podman, alice, "apps:destroy", app, "--confirm", app, "--purge-data")
    assert f"removed the volumes of {app}: {volume}" in out
    assert podman("volume", "ls", "-q", *mine).stdout.split() == []


def test_go_build_stages_on_podman_are_labelled_and_go_at_destroy(
    on_podman: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """Podman keeps a build stage as an untagged image too: labelled (recipe.stage_end),
    found through the compatible API, removed with the app; the module layer stays cached."""
    app, alice = "stgopodman", keys["alice"]
    mine = ["--filter", f"label=rivetr.instance={on_podman.instance}"]
    mine += ["--filter", f"label=rivetr.app={app}"]
    repo = SourceRepo(workdir / "go", alice, go_files())
    ok(on_podman, alice, "apps:create", app)
    ok(on_podman, alice, "builds:set", app, "type=buildpack")
    assert repo.push(on_podman.remote(app)).returncode == 0
    [stage] = podman("images", "-q", *mine).stdout.split()
    repo.put(go_files("hello again from go"))
    repo.commit("code only")
    result = repo.push(on_podman.remote(app))
    assert result.returncode == 0, result.stderr
    assert cached(result.stderr, "RUN go mod download"), result.stderr
    assert on_podman.get(app) == (200, "hello again from go uid=10001\n")
    assert len(set(podman("images", "-q", *mine).stdout.split()) - {stage}) == 1
    ok(on_podman, alice, "apps:destroy", app, "--confirm", app)
    assert podman("images", "-a", "-q", *mine).stdout.split() == []
