"""A release's processes beside `web`: the release phase, and the background types
(`worker`, `clock`, ...) of its Procfile.

Background containers carry the release's labels like its web container, so everything
that already follows a release by label follows them too: a failed deploy removes them,
retiring the release stops them gracefully (SIGTERM, then SIGKILL after `stop_timeout`),
start-up reconciliation keeps them with their live release, `apps:destroy` removes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Mapping

from rivetr_git.errors import DeployFailed, RivetrError
from rivetr_git.models import App
from rivetr_git.pipeline import scale, start
from rivetr_git.pipeline.deploy_commands import LineSplitter
from rivetr_git.pipeline.labels import LABEL_PROCESS, container_name, labels, network_name
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.pipeline.procfile import FILE_NAME, WEB, Procfile, parse, shell
from rivetr_git.runtime.base import LABEL_ONEOFF, ContainerInfo, ContainerSpec, Mount, Runtime
from rivetr_git.store.repos import Repos

_KEEP = 5  # output lines quoted in the failure reason


async def load(repos: Repos, app: str, commit: str, out: DeployLog) -> Procfile:
    """The Procfile of `commit` (empty if it has none). Raises CheckoutFailed on a bad line."""
    raw = await repos.read_file(app, commit, FILE_NAME)
    text = None if raw is None else raw.decode("utf-8", "replace")
    parsed = parse(text)
    if text is not None:
        out.info(f"{FILE_NAME}: process types {', '.join(parsed.commands) or '(none)'}")
    return parsed


async def release_phase(
    runtime: Runtime,
    spec: ContainerSpec,
    command: str,
    timeout: float,
    out: DeployLog,
) -> None:
    """Run the Procfile's `release` command once in a one-off container of the new image
    (`spec`: its env, limits and network), streaming its output. Raises
    DeployFailed('release') if it fails or runs past `timeout` seconds: nothing has
    started yet, so nothing else changes."""
    out.stage = "release"
    out.header("Release phase...")
    out.info(f"running: {command}")
    splitter = LineSplitter()
    tail: deque[str] = deque(maxlen=_KEEP)

    async def on_output(chunk: bytes) -> None:
        for line in splitter.feed(chunk):
            out.output(line, "release")
            tail.append(line)

    try:
        async with asyncio.timeout(timeout):
            code: int | None = await runtime.run_once(spec, shell(command), on_output)
    except TimeoutError:
        code = None
    for line in splitter.close():
        out.output(line, "release")
        tail.append(line)
    if code == 0:
        out.info("release phase done")
        return
    what = f"timed out after {timeout:g}s" if code is None else f"exited with code {code}"
    last = " | ".join(line.strip() for line in tail if line.strip())
    reason = f"the release command {what}" + (f"; last output: {last}" if last else "")
    raise DeployFailed("release", reason + "; nothing was started, the live release is unchanged")


def oneoff_spec(
    instance: str,
    app: App,
    deployment_id: int,
    image: str,
    env: Mapping[str, str],
    mounts: tuple[Mount, ...] = (),
) -> ContainerSpec:
    """A one-off container of a deployment's image (the app's limits, network and storage):
    no port, removed when it ends."""
    return ContainerSpec(
        name=f"rivetr-{instance}-{app.name}-{deployment_id}-release-{secrets.token_hex(3)}",
        image=image,
        port=0,
        env=env,
        labels={**labels(instance, app.name, deployment_id), LABEL_ONEOFF: "1"},
        cpus=app.cpu_limit,
        memory=app.memory_limit,
        network=network_name(instance, app.name),
        mounts=mounts,
    )


async def start_rest(
    runtime: Runtime,
    instance: str,
    app: App,
    deployment_id: int,
    image: str,
    port: int,
    env: Mapping[str, str],
    processes: Procfile,
    out: DeployLog,
    mounts: tuple[Mount, ...] = (),
) -> list[ContainerInfo]:
    """Everything of a release beside its first web container, as many of each type as
    `ps:scale` set: web.2..N (returned, to be health-checked and routed) and the
    background types. Raises StartFailed/DeployFailed('starting') if one exits at once."""
    counts = scale.parse_counts(app.scale)
    web = processes.web
    replicas = [
        await start.start(
            runtime,
            instance,
            app.name,
            deployment_id,
            image,
            port,
            env,
            cpus=app.cpu_limit,
            memory=app.memory_limit,
            mounts=mounts,
            command=shell(web) if web else None,
            index=index,
        )
        for index in range(2, scale.count_of(counts, WEB) + 1)
    ]
    background = {
        kind: (command, scale.count_of(counts, kind))
        for kind, command in processes.background().items()
    }
    started = await start_background(
        runtime,
        instance,
        app.name,
        deployment_id,
        image,
        env,
        background,
        cpus=app.cpu_limit,
        memory=app.memory_limit,
        mounts=mounts,
    )
    if replicas or background:
        running = [f"web={len(replicas) + 1}", *(f"{k}={n}" for k, (_, n) in background.items())]
        out.info(f"processes: {' '.join(running)} ({len(started) + len(replicas) + 1} containers)")
    return replicas


async def start_background(
    runtime: Runtime,
    instance: str,
    app: str,
    deployment_id: int,
    image: str,
    env: Mapping[str, str],
    commands: Mapping[str, tuple[str, int]],
    cpus: float | None = None,
    memory: int | None = None,
    mounts: tuple[Mount, ...] = (),
) -> list[ContainerInfo]:
    """Start `count` containers of each background type (type -> (command, count)), each
    named and labelled `type.index`. Raises DeployFailed('starting') naming the process
    whose container exited at once (the caller's failure clean-up removes the others)."""
    started: list[ContainerInfo] = []
    for kind, (command, count) in commands.items():
        for index in range(1, count + 1):
            process = f"{kind}.{index}"
            spec = ContainerSpec(
                name=f"{container_name(instance, app, deployment_id)}-{kind}-{index}",
                image=image,
                port=0,
                env=dict(env),
                labels={**labels(instance, app, deployment_id), LABEL_PROCESS: process},
                cpus=cpus,
                memory=memory,
                network=network_name(instance, app),
                mounts=mounts,
                command=shell(command),
            )
            info = await runtime.run(spec)
            if not info.running:
                output = ""
                with contextlib.suppress(RivetrError):
                    output = (await runtime.logs(info.id, tail=3)).strip()
                detail = f"; last output: {output.splitlines()[-1]}" if output else ""
                raise DeployFailed(
                    "starting",
                    f"process {process} ({command}) exited at once "
                    f"(exit code {info.exit_code}){detail}",
                )
            started.append(info)
    return started
