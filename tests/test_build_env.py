"""Build-time values reach RUN steps but never the image: history, config or layers.

Drives DockerRuntime.build directly (the pipeline passes the app's decrypted build-time vars
as BuildSpec.build_args), then reads the image back with `docker history --no-trunc` and
`docker save`, as anyone who can pull it would.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders import cli_build
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.runtime.base import BuildSpec
from rivetr_git.runtime.docker import DockerRuntime
from tests.helpers import BUSYBOX, stand_in_clis
from tests.test_build_limits import docker, write_context

pytestmark = pytest.mark.docker

RUN_ID = uuid.uuid4().hex[:12]
SECRET = f"s3cr3t-{RUN_ID}"
HEAD = f"""\
FROM scratch
ENV RIVETR_TEST_ENV={RUN_ID}
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ARG API_TOKEN
"""


@pytest.fixture
def tags() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for tag in made:
        docker("rmi", "-f", tag)
    assert (
        docker("images", "-q", "--filter", f"reference=rivetr-test-env/*:*{RUN_ID}").stdout.strip()
        == ""
    )


def image_text(tag: str) -> bytes:
    """Everything `docker history --no-trunc`, `docker inspect` and `docker save` show."""
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag).stdout
    inspect = docker("image", "inspect", tag).stdout
    saved = subprocess.run(["docker", "save", tag], capture_output=True, timeout=60).stdout
    assert history and inspect and saved
    return history.encode() + inspect.encode() + saved


async def build(
    runtime: DockerRuntime, tmp_path: Path, tags: list[str], name: str, steps: str, **more: str
) -> tuple[list[str], str]:
    tag = f"rivetr-test-env/{name}:{RUN_ID}"
    tags.append(tag)
    lines: list[str] = []
    spec = BuildSpec(
        write_context(tmp_path / f"{name}.tar", HEAD + steps),
        tag,
        build_args={"API_TOKEN": SECRET, **more},
    )
    await runtime.build(spec, lines.append)
    return lines, tag


async def test_a_build_arg_used_in_run_is_not_in_the_images_history_or_layers(
    runtime: DockerRuntime, tmp_path: Path, tags: list[str]
) -> None:
    lines, tag = await build(
        runtime,
        tmp_path,
        tags,
        "used",
        (
            f'RUN test "$API_TOKEN" = "{SECRET[:7]}$(echo {RUN_ID})" && echo token-seen\n'
            'CMD ["/bin/sh"]\n'
        ),
    )
    assert "token-seen" in lines, lines  # the step had the value
    text = image_text(tag)
    assert SECRET.encode() not in text
    assert b"API_TOKEN=<build-time value>" in text  # the step is still recorded, redacted
    # The build's own intermediate images (holding the value) are gone too.
    leftovers = docker("images", "-a", "-q", "--no-trunc").stdout.split()
    for image in leftovers:
        created_by = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
        assert SECRET not in created_by, image


async def test_short_values_are_redacted_without_false_alarms_but_not_baked(
    runtime: DockerRuntime, tmp_path: Path, tags: list[str]
) -> None:
    # "1" is in any image's config and files by chance: only NAME=1 and whole values count.
    lines, tag = await build(
        runtime,
        tmp_path,
        tags,
        "short",
        'ARG DEBUG\nRUN test "$DEBUG" = 1 && echo debug-on\n',
        DEBUG="1",
    )
    assert "debug-on" in lines
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag).stdout
    assert "DEBUG=<build-time value>" in history and "DEBUG=1" not in history
    # The last step is a RUN: the legacy per-layer metadata holds its command too.
    assert SECRET.encode() not in image_text(tag)
    with pytest.raises(BuildFailed, match=r"DEBUG ended up in the image's config"):
        await build(runtime, tmp_path, tags, "shortenv", "ARG DEBUG\nENV MODE=$DEBUG\n", DEBUG="1")


async def test_a_build_that_writes_the_value_into_a_file_fails(
    runtime: DockerRuntime, tmp_path: Path, tags: list[str]
) -> None:
    with pytest.raises(BuildFailed, match=r"API_TOKEN was written into the image's files"):
        await build(runtime, tmp_path, tags, "written", 'RUN echo "$API_TOKEN" > /token\n')
    assert docker("image", "inspect", tags[-1]).returncode != 0  # nothing left behind


async def test_a_build_that_bakes_the_value_into_env_fails(
    runtime: DockerRuntime, tmp_path: Path, tags: list[str]
) -> None:
    with pytest.raises(BuildFailed, match=r"API_TOKEN ended up in the image's config"):
        await build(runtime, tmp_path, tags, "baked", "ENV TOKEN=$API_TOKEN\n")
    assert docker("image", "inspect", tags[-1]).returncode != 0


class Lines:
    """Stands in for a DeployLog: keeps what the build printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    def output(self, text: str, stream: str) -> None:
        self.lines.append(text)


def test_builder_clis_get_build_env_values_through_their_environment_not_argv() -> None:
    env = {"API_TOKEN": SECRET}
    for tool in ("nixpacks", "pack"):
        argv = cli_build.command(
            tool, Path("/src"), "img:1", ["API_TOKEN"], env, no_cache=False, pack_builder="b"
        )
        assert argv[argv.index("--env") : argv.index("--env") + 2] == ["--env", "API_TOKEN"]
        assert SECRET not in " ".join(argv)
    # railpack documents only --env NAME=VALUE.
    argv = cli_build.command(
        "railpack", Path("/src"), "img:1", ["API_TOKEN"], env, no_cache=False, pack_builder="b"
    )
    assert f"API_TOKEN={SECRET}" in argv


async def test_a_stand_in_nixpacks_sees_the_decrypted_value_and_the_log_never_does(
    runtime: DockerRuntime, tmp_path: Path, tags: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the stand-in CLI (the real nixpacks cannot be installed here)."""
    record = tmp_path / "record"
    bin_dir = stand_in_clis(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    (tmp_path / "work").mkdir()
    tag = f"rivetr-test-env/nix:{RUN_ID}"
    tags.append(tag)
    log = Lines()
    await cli_build.build(
        runtime,
        "nixpacks",
        write_app(tmp_path / "work" / "context.tar"),
        tmp_path / "work" / "src",
        tag,
        cast(DeployLog, log),
        build_env={"API_TOKEN": SECRET},
        timeout=120,
        no_cache=False,
        pack_builder="unused",
    )
    recorded = json.loads((record / "nixpacks.json").read_text())
    assert recorded["env"] == {"API_TOKEN": SECRET}  # decrypted, in the CLI's environment
    assert SECRET not in json.dumps(recorded["argv"])
    assert "running nixpacks build" in "\n".join(log.lines)
    assert not [line for line in log.lines if SECRET in line]
    assert "nixpacks stand-in: API_TOKEN=***" in log.lines  # it echoed it: masked


def write_app(path: Path) -> Path:
    """A commit's tar with the busybox app the stand-in builds (busybox, www/)."""
    with tarfile.open(path, "w") as tar:
        tar.add(BUSYBOX, "busybox")
        page = b"hello\n"
        info = tarfile.TarInfo("www/index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    return path
