"""Build type *compose*: a compose file deployed as a group, one service of it routed.

Each deployment is a compose project of its own (rivetr-<instance>-<app>-<deployment>), so
the new group starts next to the live one and the switch is the same as for any app: the
routed service (the app's `compose_service`, else the one service publishing a port, else
`web`) is health-checked, promoted and later retired; retiring removes the whole group.

The pushed file is normalised (compose_normalise) and checked first (compose_policy: nothing
that reaches the host gets through), then rewritten with the server's settings on top: no
service publishes ports (the routed one gets 127.0.0.1::PORT, like any app), none keeps a
fixed container_name (two groups run at once), every service carries the deployment's labels
(cleanup finds them), restart "no", the app's limits and the engine's ulimits; the routed
service gets the app's env (by name: values travel in compose's environment, never on disk)
and PORT, and services that build get image names of this app. Compose itself gets none of
the server's environment beyond PATH-like basics and the engine's settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rivetr_git.errors import BuildFailed, RivetrError, StartFailed
from rivetr_git.pipeline.builders import compose_normalise, compose_policy, compose_storage
from rivetr_git.pipeline.builders.cli_build import stream
from rivetr_git.pipeline.builders.compose_images import of_release
from rivetr_git.pipeline.builders.compose_stages import label_compose_stages
from rivetr_git.pipeline.builders.context import extract
from rivetr_git.pipeline.labels import container_name, image_tag, labels
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.runtime.base import ContainerInfo, Runtime

log = logging.getLogger(__name__)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
FILE = ".rivetr-compose.json"  # the rewritten file, next to the user's (JSON is YAML)


@dataclass(frozen=True)
class Group:
    project: str
    service: str  # the routed service
    image: str  # the routed service's image (built by this deployment)
    services: tuple[str, ...]


def cli() -> list[str]:
    """`docker compose` when the plugin is there, else `docker-compose`. Raises BuildFailed."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    raise BuildFailed(
        "build type compose needs `docker compose` or `docker-compose`, and "
        "neither is installed on this server; install one (e.g. apt-get "
        "install docker-compose)"
    )


BASICS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")  # all compose gets of our environment


@dataclass(frozen=True)
class Limits:
    """What the server sets on every service of a group, whatever the file says."""

    cpus: float | None = None
    memory: int | None = None
    ulimits: Mapping[str, int] = field(default_factory=dict)  # Podman needs explicit ones


def routed_service(
    services: Mapping[str, Mapping[str, Any]], setting: str | None, name: str
) -> str:
    """The service that gets traffic: the setting, else the one publishing a port, else web."""
    if setting:
        if setting not in services:
            raise BuildFailed(
                f"compose_service {setting!r} is not a service of {name} ({', '.join(services)})"
            )
        return setting
    publishing = [s for s, spec in services.items() if spec and spec.get("ports")]
    if len(publishing) == 1:
        return publishing[0]
    if "web" in services:
        return "web"
    raise BuildFailed(
        f"cannot tell which service of {name} to route: "
        f"{'several publish ports' if publishing else 'none publishes a port'} "
        "and none is called web; set the app's compose_service"
    )


def _escaped(value: Any) -> Any:
    """Every `$` doubled: the file is already interpolated, compose must not do it again."""
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value.replace("$", "$$") if isinstance(value, str) else value


def rewrite(
    checked: Mapping[str, Any],
    name: str,
    instance: str,
    app: str,
    deployment_id: int,
    setting: str | None,
    port: int | None = None,
    env_names: Collection[str] = (),
    limits: Limits = Limits(),
    images: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], Group]:
    """The compose file as this deployment runs it: `checked` (normalised by compose_normalise
    and allowed by compose_policy) with the server's settings on top (see the module docstring).
    The app's env appears by name only; compose takes the values from its own environment.
    `images`: a release's own, service by service, when it starts again (compose_images)."""
    data: dict[str, Any] = json.loads(json.dumps(checked))  # a deep copy
    data.pop("version", None)  # the Compose Spec: mem_limit, cpus, init in any file
    data.pop("name", None)  # the project name is ours (-p)
    services: dict[str, dict[str, Any]] = data["services"]
    routed = routed_service(services, setting, name)
    if not (services[routed] or {}).get("build"):
        raise BuildFailed(
            f"the routed service {routed} of {name} has no build: section; "
            "rivetr builds the routed service from the pushed commit"
        )
    project = container_name(instance, app, deployment_id)
    tag = image_tag(instance, app, deployment_id)
    built = _image_names(services, routed, tag, images)
    for service, spec in services.items():
        spec = services[service] = dict(spec or {})
        for key in compose_policy.REPLACED:
            spec.pop(key, None)
        spec["restart"] = "no"  # the server's monitor decides what happens to a dead service
        spec.setdefault("init", True)  # as for any app: a PID 1 that ignores SIGTERM
        _only_app_names(spec, env_names if service == routed or port is None else ())
        spec["labels"] = {
            **{
                k: "" if v is None else v
                for k, v in compose_normalise.as_dict(spec.get("labels")).items()
            },
            **labels(instance, app, deployment_id),
        }
        if limits.memory is not None:
            spec["mem_limit"] = spec["memswap_limit"] = limits.memory
        if limits.cpus is not None:
            spec["cpus"] = limits.cpus
        if limits.ulimits:
            spec["ulimits"] = {k: {"soft": v, "hard": v} for k, v in limits.ulimits.items()}
        if spec.get("build"):
            spec["image"] = built[service]
        if service == routed and port is not None:
            spec["ports"] = [f"127.0.0.1::{port}"]
            spec["environment"] = {
                **compose_normalise.as_dict(spec.get("environment")),
                **dict.fromkeys(env_names),
                "PORT": str(port),
            }
    group = Group(project=project, service=routed, image=built[routed], services=tuple(services))
    return _escaped(data), group


def _image_names(
    services: Collection[str], routed: str, tag: str, images: Mapping[str, str] | None
) -> dict[str, str]:
    """The routed service's image is the release tag, the others' <tag>-<service> (pruned
    with the release); a release that starts again runs its own `images`."""
    return {s: tag if s == routed else f"{tag}-{s.lower()}" for s in services} | dict(images or {})


def _only_app_names(spec: dict[str, Any], env_names: Collection[str]) -> None:
    """A bare NAME in environment or build args takes compose's own environment: only the
    app's variables may come from there, never the server's."""
    for holder, key in ((spec, "environment"), (spec.get("build"), "args")):
        if isinstance(holder, dict) and key in holder:
            holder[key] = {
                k: v
                for k, v in compose_normalise.as_dict(holder[key]).items()
                if v is not None or k in env_names
            }


async def checked(
    source: Path, compose_file: str, allowed_binds: Collection[str]
) -> dict[str, Any]:
    """The pushed file normalised and checked (compose_normalise, compose_policy). Raises
    BuildFailed."""
    data = await asyncio.to_thread(compose_normalise.normalise, source, compose_file)
    compose_policy.check(data, source, allowed_binds)
    return data


def write_file(source: Path, data: Mapping[str, Any]) -> None:
    """The rewritten file, next to the pushed one. A pushed symlink of that name is
    replaced, never followed (it could point anywhere on the host)."""
    path = source / FILE
    path.unlink(missing_ok=True)
    with path.open("x") as out:  # O_EXCL: no symlink of a racing writer is followed either
        json.dump(data, out)


def process_env(runtime: Runtime, env: Mapping[str, str]) -> dict[str, str]:
    """Compose's environment: a few basics, the engine's, the app's values; never the
    server's own (its settings and whatever else the daemon was started with). Raises
    StartFailed for an app variable compose would read as its own setting."""
    clash = sorted(
        n
        for n in env
        if n in BASICS or n in runtime.engine_env or n.startswith(("DOCKER_", "COMPOSE_"))
    )
    if clash:
        raise StartFailed(
            f"env var {', '.join(clash)} cannot reach a compose app: "
            "docker-compose would read it as its own setting; rename it "
            "(config:unset, config:set)"
        )
    basics = {k: os.environ[k] for k in BASICS if k in os.environ}
    return {**basics, **runtime.engine_env, **env}


def _argv(command: list[str], empty: Path, project: str, file: str | Path, *args: str) -> list[str]:
    """`--env-file` an empty file of ours: compose would read the project dir's .env (the
    pushed one) for its own settings (DOCKER_HOST, COMPOSE_FILE, ...). /dev/null is refused
    ("not a file")."""
    empty.mkdir(parents=True, exist_ok=True)
    (empty / "empty.env").write_text("")
    return [
        *command[1:],
        "--env-file",
        str(empty / "empty.env"),
        "-p",
        project,
        "-f",
        str(file),
        *args,
    ]


async def build(
    runtime: Runtime,
    context_tar: Path,
    source: Path,
    compose_file: str,
    instance: str,
    app: str,
    deployment_id: int,
    setting: str | None,
    log: DeployLog,
    timeout: float,
    allowed_binds: Collection[str] = (),
) -> Group:
    """Extract the commit, check the file and build the group's images, streaming. Raises
    BuildFailed (a refused file before anything is built or started)."""
    command = await asyncio.to_thread(cli)
    await asyncio.to_thread(extract, context_tar, source)
    data, group = rewrite(
        await checked(source, compose_file, allowed_binds),
        compose_file,
        instance,
        app,
        deployment_id,
        setting,
    )
    note = await asyncio.to_thread(
        label_compose_stages, source, data, labels(instance, app, deployment_id)
    )
    write_file(source, data)
    log.info(
        f"compose project {group.project}: services {', '.join(group.services)}; "
        f"routing {group.service}"
    )
    if note:
        log.info(note)
    code, last = await stream(
        command[0],
        _argv(command, source.parent, group.project, FILE, "build"),
        source,
        process_env(runtime, {}),
        log,
        timeout,
        "compose build",
        {},
    )
    if code != 0:
        raise BuildFailed(f"compose build exited with code {code}" + (f": {last}" if last else ""))
    return group


async def up(
    runtime: Runtime,
    source: Path,
    compose_file: str,
    instance: str,
    app: str,
    deployment_id: int,
    setting: str | None,
    port: int,
    env: Mapping[str, str],
    log: DeployLog,
    state_dir: Path,
    limits: Limits = Limits(),
    allowed_binds: Collection[str] = (),
    image: str | None = None,
) -> ContainerInfo:
    """Start the group (`image`: a release's routed image tag: its images, service by
    service); return the routed service's container. Raises StartFailed."""
    child_env = process_env(runtime, env)
    try:
        spec = await checked(source, compose_file, allowed_binds)
        images = await of_release(runtime, spec["services"], image)
        data, group = rewrite(
            spec,
            compose_file,
            instance,
            app,
            deployment_id,
            setting,
            port,
            sorted(env),
            limits,
            images,
        )
    except BuildFailed as exc:
        raise StartFailed(exc.reason) from None
    await compose_storage.prepare(runtime, data, instance, app)
    write_file(source, data)  # names only: values are in child_env
    _remember(state_dir, group.project, data)
    command = await asyncio.to_thread(cli)
    argv = _argv(command, source.parent, group.project, FILE, "up", "-d", "--no-build")
    code, last = await stream(command[0], argv, source, child_env, log, 300, "compose up", env)
    if code != 0:
        raise StartFailed(f"compose up exited with code {code}" + (f": {last}" if last else ""))
    routed = {PROJECT_LABEL: group.project, SERVICE_LABEL: group.service}
    found = await runtime.list_containers(routed)
    if not found:
        raise StartFailed(f"compose up started no container for service {group.service}")
    info = found[0]
    if not info.running or info.host_port is None:
        output = (await runtime.logs(info.id, tail=5)).strip()
        detail = f"; last output: {output.splitlines()[-1]}" if output else ""
        raise StartFailed(
            f"service {group.service} exited at once (exit code {info.exit_code}){detail}"
        )
    return info


def _remember(state_dir: Path, project: str, data: dict[str, Any]) -> None:
    """Keep what `down` needs (service and network names; no build contexts, which are
    gone by then) until the group is removed."""
    state_dir.mkdir(parents=True, exist_ok=True)
    services = {
        name: {
            "image": spec.get("image") or "none",
            **({"networks": spec["networks"]} if spec.get("networks") else {}),
        }
        for name, spec in data["services"].items()
    }
    kept: dict[str, Any] = {"services": services}
    for section in ("networks", "volumes"):  # `down -v` keeps external (the app's) volumes
        if isinstance(data.get(section), dict):
            kept[section] = data[section]
    (state_dir / f"{project}.json").write_text(json.dumps(kept))


async def down(runtime: Runtime, state_dir: Path, project: str) -> None:
    """Remove what is left of a group: containers, networks, anonymous volumes (its named
    volumes are the app's, external to the project: see compose_storage)."""
    path = state_dir / f"{project}.json"
    if not path.exists():
        return
    try:
        command = await asyncio.to_thread(cli)
    except BuildFailed as exc:
        log.warning("cannot remove compose project %s: %s", project, exc)
        return
    proc = await asyncio.create_subprocess_exec(
        command[0],
        *_argv(command, state_dir, project, path, "down", "--remove-orphans", "-v", "-t", "5"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=process_env(runtime, {}),
    )
    _, err = await proc.communicate()
    if proc.returncode == 0:
        path.unlink(missing_ok=True)
    else:
        log.warning("compose down %s failed: %s", project, err.decode(errors="replace").strip())


def _remembered(state_dir: Path, instance: str, app: str) -> list[str]:
    """The projects of `app` with a state file."""
    if not state_dir.is_dir():
        return []
    prefix = container_name(instance, app, 0)[:-1]  # rivetr-<instance>-<app>-
    return [
        path.stem
        for path in sorted(state_dir.glob(f"{prefix}*.json"))
        # not another app whose name starts with this one's
        if path.stem[len(prefix) :].isdigit()
    ]


async def sweep(state_dir: Path, runtime: Runtime, instance: str, app: str) -> None:
    """`down` every remembered group of `app` that has no running container left (retired,
    failed, or removed at start-up). Called between the app's deploys, which never overlap."""
    for project in _remembered(state_dir, instance, app):
        with contextlib.suppress(RivetrError):
            running = [
                c for c in await runtime.list_containers({PROJECT_LABEL: project}) if c.running
            ]
            if not running:
                await down(runtime, state_dir, project)


async def remove_all(state_dir: Path, runtime: Runtime, instance: str, app: str) -> None:
    """`down` every remembered group of `app` and forget it (the app is being destroyed; its
    containers are gone already)."""
    for project in _remembered(state_dir, instance, app):
        await down(runtime, state_dir, project)
        leftover = state_dir / f"{project}.json"
        if leftover.exists():
            log.warning(
                "compose project %s of destroyed app %s may have left networks "
                "behind (docker network ls --filter label=%s=%s)",
                project,
                app,
                PROJECT_LABEL,
                project,
            )
            leftover.unlink()
