"""Build limits (build_timeout, build_cpu_limit, build_memory_limit) against the real engine.

The runtime is driven directly with a context tar made here. Every image is tagged
rivetr-test-limits/<name>:<run>, on a layer chain of this run's own (the ENV step), so removing
the tags at the end removes every layer this file created and no layer anyone else may be
using as cache.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline import build as build_stage
from rivetr_git.pipeline.build import BuildLimits
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.runtime.base import BuildSpec
from rivetr_git.runtime.docker import DockerRuntime
from rivetr_git.settings import load_settings
from tests.helpers import BUSYBOX

pytestmark = pytest.mark.docker

RUN_ID = uuid.uuid4().hex[:12]
HEAD = f"""\
FROM scratch
ENV RIVETR_TEST_LIMITS={RUN_ID}
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""
RUNNING_IN = re.compile(r" ---> Running in ([0-9a-f]{12,64})")
MiB = 1024**2


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)


def write_context(path: Path, dockerfile: str) -> Path:
    # GNU format: the docker CLI (base image) does not recognise a PAX tar on stdin.
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(BUSYBOX, "busybox")
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@dataclass
class Builds:
    """Builds of one test module; removes what they created."""

    directory: Path
    tags: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    def tag(self, name: str) -> str:
        tag = f"rivetr-test-limits/{name}:{RUN_ID}"
        self.tags.append(tag)
        return tag

    def context(self, name: str, steps: str) -> Path:
        return write_context(self.directory / f"{name}.tar", HEAD + steps)

    async def build(
        self, runtime: DockerRuntime, name: str, steps: str, **limits: float | int | None
    ) -> tuple[list[tuple[float, str]], str]:
        """Build; return (arrival time, line) of every output line and the image id."""
        lines: list[tuple[float, str]] = []

        def on_line(line: str) -> None:
            lines.append((time.monotonic(), line))
            if match := RUNNING_IN.fullmatch(line):
                self.containers.append(match[1])

        spec = BuildSpec(self.context(name, steps), self.tag(name), **limits)  # type: ignore[arg-type]
        try:
            image_id = await runtime.build(spec, on_line)
        except BuildFailed as exc:
            exc.lines = lines  # type: ignore[attr-defined]
            raise
        return lines, image_id


@pytest.fixture(scope="module")
def builds(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builds]:
    found = Builds(tmp_path_factory.mktemp("limits"))
    base = found.tag("base")
    context = found.context("base", "")
    with open(context, "rb") as tar:
        result = subprocess.run(
            ["docker", "build", "-q", "-t", base, "-"],
            stdin=tar,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    try:
        yield found
    finally:
        for container in found.containers:
            docker("rm", "-f", container)
        # Leaves first, the base last: each removal also removes the layers only it used.
        for tag in [*found.tags[1:], base]:
            docker("rmi", tag)
        mine = f"reference=rivetr-test-limits/*:{RUN_ID}"
        assert docker("images", "-q", "--filter", mine).stdout.strip() == ""


def texts(lines: list[tuple[float, str]]) -> list[str]:
    return [line for _, line in lines]


# --- settings -----------------------------------------------------------------------------------


def test_limits_from_settings() -> None:
    limits = BuildLimits.from_settings(
        load_settings(
            env={
                "RIVETR_BUILD_MEMORY_LIMIT": "512m",
                "RIVETR_BUILD_CPU_LIMIT": "1.5",
                "RIVETR_BUILD_TIMEOUT": "60",
            }
        )
    )
    assert limits == BuildLimits(timeout=60.0, cpus=1.5, memory=512 * MiB, memory_text="512m")


def test_default_limits_are_a_timeout_only() -> None:
    limits = BuildLimits.from_settings(load_settings(env={}))
    assert limits == BuildLimits(timeout=900.0, cpus=None, memory=None, memory_text="")


class RecordingRuntime:
    def __init__(self) -> None:
        self.specs: list[BuildSpec] = []

    async def build(self, spec: BuildSpec, on_line: object) -> str:
        self.specs.append(spec)
        return "sha256:0"


async def test_the_build_stage_puts_the_limits_into_the_build_spec(tmp_path: Path) -> None:
    runtime = RecordingRuntime()
    log = cast(DeployLog, None)  # the recording runtime prints nothing
    limits = BuildLimits(timeout=5.0, cpus=0.5, memory=64 * MiB, memory_text="64m")
    await build_stage.docker_build(
        runtime,  # type: ignore[arg-type]
        tmp_path / "c.tar",
        "app:7",
        "Dockerfile",
        log,
        limits=limits,
    )
    await build_stage.docker_build(
        runtime,  # type: ignore[arg-type]
        tmp_path / "c.tar",
        "app:8",
        "Dockerfile",
        log,
    )
    with_limits, without = runtime.specs
    assert (with_limits.timeout, with_limits.cpus, with_limits.memory) == (5.0, 0.5, 64 * MiB)
    assert (without.timeout, without.cpus, without.memory) == (None, None, None)


# --- the real engine ----------------------------------------------------------------------------


async def test_a_build_past_its_timeout_is_stopped_and_fails(
    runtime: DockerRuntime, builds: Builds
) -> None:
    started = time.monotonic()
    with pytest.raises(BuildFailed) as info:
        await builds.build(runtime, "timeout", "RUN sleep 30\nRUN touch /never\n", timeout=2)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "build_timeout (2 s)" in message, message
    # The daemon cancels the build when its connection closes, and kills and removes the
    # step's container itself; the runtime only force-removes it after waiting 5 s more.
    assert 2 <= elapsed < 6, elapsed
    lines = texts(info.value.lines)  # type: ignore[attr-defined]
    running = [m[1] for line in lines if (m := RUNNING_IN.fullmatch(line))]
    assert running, lines
    left = docker("ps", "-a", "-q", "--no-trunc").stdout.split()
    assert not [c for c in left if c.startswith(running[-1])], "the step's container is left"
    assert await runtime.inspect(running[-1]) is None
    assert docker("image", "inspect", f"rivetr-test-limits/timeout:{RUN_ID}").returncode != 0


async def test_a_build_over_its_memory_limit_fails_naming_the_limit(
    runtime: DockerRuntime, builds: Builds
) -> None:
    # busybox tail keeps its last "line" (here 200 MB without a newline) in memory.
    with pytest.raises(BuildFailed) as info:
        await builds.build(
            runtime, "memory", "RUN head -c 200m /dev/zero | tail\n", memory=16 * MiB
        )
    message = str(info.value)
    assert "build_memory_limit (16m)" in message, message
    # The engine reports OOMKilled, or (when the step's container is gone before it is
    # inspected, seen under load) only the SIGKILL exit code: both name the limit.
    assert "ran out of memory" in message or "exit code 137" in message, message


# Each build echoes its own marker: the build cache ignores limits, and a cached step
# prints nothing. cgroup v2 files first, then v1.
CGROUP_LIMITS = """\
RUN echo {marker}; cd /sys/fs/cgroup; if [ -f cpu.max ]; then \
      echo "cpu: $(cat cpu.max)"; echo "memory: $(cat memory.max)"; \
    else \
      echo "cpu: $(cat cpu/cpu.cfs_quota_us) $(cat cpu/cpu.cfs_period_us)"; \
      echo "memory: $(cat memory/memory.limit_in_bytes)"; \
    fi
"""


async def test_cpu_and_memory_limits_apply_to_run_steps(
    runtime: DockerRuntime, builds: Builds
) -> None:
    lines, _ = await builds.build(
        runtime, "cgroup", CGROUP_LIMITS.format(marker="limited"), cpus=0.5, memory=64 * MiB
    )
    out = texts(lines)
    assert "cpu: 50000 100000" in out, out  # 0.5 CPU: 50 ms of every 100 ms
    assert f"memory: {64 * MiB}" in out, out


async def test_without_limits_run_steps_are_unlimited(
    runtime: DockerRuntime, builds: Builds
) -> None:
    lines, _ = await builds.build(runtime, "unlimited", CGROUP_LIMITS.format(marker="unlimited"))
    cpu = next(line for line in texts(lines) if line.startswith("cpu: "))
    assert cpu in ("cpu: -1 100000", "cpu: max 100000"), cpu


async def test_a_build_within_its_limits_succeeds_and_streams(
    runtime: DockerRuntime, builds: Builds
) -> None:
    lines, image_id = await builds.build(
        runtime,
        "within",
        "RUN echo first-line && sleep 1 && echo second-line\n",
        timeout=30,
        cpus=0.5,
        memory=64 * MiB,
    )
    done = time.monotonic()
    out = texts(lines)
    assert "first-line" in out and "second-line" in out, out
    assert out.index("first-line") < out.index("second-line")
    first_at = lines[out.index("first-line")][0]
    assert done - first_at > 0.5, "build output was not streamed as it happened"
    assert image_id.startswith("sha256:")
    inspected = docker("image", "inspect", "-f", "{{.Id}}", f"rivetr-test-limits/within:{RUN_ID}")
    assert inspected.stdout.strip() == image_id
