"""Fixtures: a real Docker engine, a real daemon, real keys."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import aiohttp
import pytest

from rivetr_git.runtime.docker import DockerRuntime
from tests.helpers import BUSYBOX, Key, Server, make_key
from tests.proxy_env import BACKENDS, Env, start_env


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The end-to-end tests need a Docker engine; `.ci/run` starts one. Never skipped."""
    if shutil.which("docker") is None or not BUSYBOX.exists():
        pytest.fail("docker and /bin/busybox are required: run `make test` or `.ci/run`")
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    if result.returncode != 0:
        pytest.fail("no Docker engine answers: start dockerd (`.ci/run` does this)")


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    directory = tmp_path_factory.mktemp("keys")
    return {name: make_key(directory, name) for name in ("alice", "bob", "mallory")}


@pytest.fixture(scope="session")
def server(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key]
) -> Iterator[Server]:
    """One daemon shared by the end-to-end tests; each test uses its own app names."""
    yield from running_server(tmp_path_factory.mktemp("srv") / "data", keys, with_bob=True)


@pytest.fixture
def own_server(docker_engine: None, tmp_path: Path, keys: dict[str, Key]) -> Iterator[Server]:
    """A daemon of the test's own, for tests that stop, kill or restart it."""
    yield from running_server(tmp_path / "data", keys)


def running_server(
    data_dir: Path, keys: dict[str, Key], with_bob: bool = False, env: dict[str, str] | None = None
) -> Generator[Server, None, None]:
    srv = Server(data_dir, env)
    srv.cli("keys", "add", "alice", str(keys["alice"].public), "--admin")
    if with_bob:
        srv.cli("keys", "add", "bob", str(keys["bob"].public))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        srv.purge()


@pytest.fixture
async def runtime(docker_engine: None) -> AsyncIterator[DockerRuntime]:
    """The Docker runtime itself, for tests that drive it directly."""
    rt = await DockerRuntime.connect()
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each proxy test runs against rivetr's own proxy and against the nginx data plane."""
    name: str = request.param
    marker = request.node.get_closest_marker("builtin_only")
    if name == "nginx" and marker is not None:
        # Run it anyway: strict xfail notices the day nginx (or our config) gets it right.
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"nginx: {marker.args[0]}"))
    return name


@pytest.fixture
async def env(backend: str) -> AsyncIterator[Env]:
    """A proxy with default settings in front of the 'web' upstream (tests/proxy_env.py)."""
    async with start_env(backend=backend) as started:
        yield started


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the engine (directly or through a fixture) is marked `docker`,
    so `pytest -m "not docker"` runs the fast tier alone."""
    for item in items:
        if "docker_engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)
