"""Build types *nixpacks*, *railpack* and *pack*: run the tool's own CLI on the pushed tree.

Each CLI builds an image on the container engine by itself; we give it the source as a
directory, the image name, and the build-time variables, and stream its output line by
line. Values go through the child's environment with `--env NAME` where the tool reads a
bare name from its environment (nixpacks, pack), so they never appear in a process list;
railpack only documents `--env NAME=VALUE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders.context import extract
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.runtime.base import Runtime


@dataclass(frozen=True)
class Tool:
    install: str  # how to install it, for the missing-CLI message
    env_by_name: bool  # `--env NAME` takes the value from the tool's environment


TOOLS: dict[str, Tool] = {
    "nixpacks": Tool("curl -sSL https://nixpacks.com/install.sh | bash (see nixpacks.com)", True),
    "railpack": Tool(
        "curl -sSL https://railpack.com/install.sh | sh, with a BuildKit "
        "reachable through BUILDKIT_HOST (see railpack.com)",
        False,
    ),
    "pack": Tool("see buildpacks.io/docs/for-platform-operators/how-to/integrate-ci/pack/", True),
}


def command(
    tool: str,
    source: Path,
    tag: str,
    env_names: list[str],
    build_env: Mapping[str, str],
    *,
    no_cache: bool,
    pack_builder: str,
) -> list[str]:
    """The documented invocation of `tool` building `source` into the image `tag`."""
    by_name = TOOLS[tool].env_by_name
    env_args = [
        a for name in env_names for a in ("--env", name if by_name else f"{name}={build_env[name]}")
    ]
    if tool == "nixpacks":
        return [
            "nixpacks",
            "build",
            str(source),
            "--name",
            tag,
            *env_args,
            *(["--no-cache"] if no_cache else []),
        ]
    if tool == "railpack":
        return ["railpack", "build", "--name", tag, "--progress", "plain", *env_args, str(source)]
    return [
        "pack",
        "build",
        tag,
        "--path",
        str(source),
        "--builder",
        pack_builder,
        "--pull-policy",
        "if-not-present",
        *env_args,
        *(["--clear-cache"] if no_cache else []),
    ]


async def build(
    runtime: Runtime,
    tool: str,
    context_tar: Path,
    source: Path,
    tag: str,
    log: DeployLog,
    *,
    build_env: Mapping[str, str],
    timeout: float,
    no_cache: bool,
    pack_builder: str,
) -> None:
    """Run `tool` on the commit (extracted to `source`), streaming its output. Raises
    BuildFailed when the CLI is missing, fails, runs past `timeout` or makes no image."""
    executable = shutil.which(tool)
    if executable is None:
        raise BuildFailed(
            f"build type {tool} needs the {tool} CLI, which is not installed on "
            f"this server; install it ({TOOLS[tool].install}), or set the app's "
            "build_type (e.g. dockerfile with a Dockerfile in the repo)"
        )
    await asyncio.to_thread(extract, context_tar, source)
    names = sorted(build_env)
    argv = command(
        tool, source, tag, names, build_env, no_cache=no_cache, pack_builder=pack_builder
    )
    log.info(f"running {' '.join(_redact(argv, build_env))}")
    env = {**os.environ, **runtime.engine_env, **build_env}
    code, last = await stream(executable, argv[1:], source, env, log, timeout, tool, build_env)
    if code != 0:
        raise BuildFailed(f"{tool} exited with code {code}" + (f": {last}" if last else ""))
    repository = tag.rpartition(":")[0]
    if tag not in await runtime.list_images(repository):
        raise BuildFailed(f"{tool} finished but made no image {tag}")


async def stream(
    executable: str,
    args: list[str],
    cwd: Path,
    env: Mapping[str, str],
    log: DeployLog,
    timeout: float,
    tool: str,
    secrets: Mapping[str, str],
) -> tuple[int, str]:
    """Run a build tool, streaming its output (stdout and stderr) to `log` line by line,
    with the values of `secrets` masked. Returns the exit code and the last line. Raises
    BuildFailed once it runs past `timeout` (its whole process group is killed)."""
    proc = await asyncio.create_subprocess_exec(
        executable,
        *args,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        umask=0o022,
    )  # what it writes may go into the image
    last = ""
    try:
        async with asyncio.timeout(timeout):
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = _redact_text(raw.decode("utf-8", "replace").rstrip("\r\n"), secrets)
                last = line or last
                log.output(line, "build")
            code = await proc.wait()
    except TimeoutError:
        raise BuildFailed(
            f"{tool} took longer than build_timeout ({timeout:g} s); raise "
            "build_timeout or speed up the build"
        ) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return code, last


def _redact_text(text: str, build_env: Mapping[str, str]) -> str:
    """Build output is stored and shown to pushers: values never appear in it."""
    for value in build_env.values():
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _redact(argv: list[str], build_env: Mapping[str, str]) -> list[str]:
    return [_redact_text(a, build_env) for a in argv]
