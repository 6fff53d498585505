"""Build type *compose*: a compose file deployed as a group, one service of it routed.

Each deployment is a compose project of its own (rivetr-<instance>-<app>-<deployment>), so
the new group starts next to the live one and the switch is the same as for any app: the
routed service (the app's `compose_service`, else the one service publishing a port, else
`web`) is health-checked, promoted and later retired; retiring removes the whole group.

The file is rewritten before it is used: no service publishes ports (the routed one gets
127.0.0.1::PORT, like any app), none keeps a fixed container_name (two groups run at once),
every service carries the deployment's labels (cleanup finds them), the routed service gets
the app's env and PORT, and services that build get image names of this app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rivetr_git.errors import BuildFailed, RivetrError, StartFailed
from rivetr_git.pipeline.cli_build import stream
from rivetr_git.pipeline.context import extract
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
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    raise BuildFailed("build type compose needs `docker compose` or `docker-compose`, and "
                      "neither is installed on this server; install one (e.g. apt-get "
                      "install docker-compose)")


def _services(data: Any, name: str) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict) \
            or not data["services"]:
        raise BuildFailed(f"{name} defines no services")
    services: dict[str, dict[str, Any]] = data["services"]
    return services


def routed_service(services: Mapping[str, Mapping[str, Any]], setting: str | None,
                   name: str) -> str:
    """The service that gets traffic: the setting, else the one publishing a port, else web."""
    if setting:
        if setting not in services:
            raise BuildFailed(f"compose_service {setting!r} is not a service of {name} "
                              f"({', '.join(services)})")
        return setting
    publishing = [s for s, spec in services.items() if spec and spec.get("ports")]
    if len(publishing) == 1:
        return publishing[0]
    if "web" in services:
        return "web"
    raise BuildFailed(f"cannot tell which service of {name} to route: "
                      f"{'several publish ports' if publishing else 'none publishes a port'} "
                      "and none is called web; set the app's compose_service")


def _as_dict(value: Any) -> dict[str, Any]:
    """Compose's list form (KEY=VALUE) or mapping form, as a mapping."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return dict(str(item).partition("=")[::2] for item in value)
    return {}


def rewrite(text: str, name: str, instance: str, app: str, deployment_id: int,
            setting: str | None, port: int | None = None,
            env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], Group]:
    """The compose file as this deployment runs it (see the module docstring)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BuildFailed(f"{name} is not valid YAML: {exc}") from None
    services = _services(data, name)
    routed = routed_service(services, setting, name)
    if not (services[routed] or {}).get("build"):
        raise BuildFailed(f"the routed service {routed} of {name} has no build: section; "
                          "rivetr builds the routed service from the pushed commit")
    project = container_name(instance, app, deployment_id)
    tag = image_tag(instance, app, deployment_id)
    for service, spec in services.items():
        spec = services[service] = dict(spec or {})
        spec.pop("ports", None)
        spec.pop("container_name", None)
        spec["labels"] = {**_as_dict(spec.get("labels")), **labels(instance, app, deployment_id)}
        if spec.get("build"):
            # Other services' images: <release tag>-<service>, pruned with the release.
            spec["image"] = tag if service == routed else f"{tag}-{service.lower()}"
        if service == routed and port is not None:
            spec["ports"] = [f"127.0.0.1::{port}"]
            spec["environment"] = {**_as_dict(spec.get("environment")), **(env or {}),
                                   "PORT": str(port)}
    group = Group(project=project, service=routed, image=tag, services=tuple(services))
    return data, group


async def build(runtime: Runtime, context_tar: Path, source: Path, compose_file: str,
                instance: str, app: str, deployment_id: int, setting: str | None,
                log: DeployLog, timeout: float) -> Group:
    """Extract the commit and build the group's images, streaming. Raises BuildFailed."""
    command = await asyncio.to_thread(cli)
    await asyncio.to_thread(extract, context_tar, source)
    text = (source / compose_file).read_text(errors="replace")
    data, group = rewrite(text, compose_file, instance, app, deployment_id, setting)
    (source / FILE).write_text(json.dumps(data))
    log.info(f"compose project {group.project}: services {', '.join(group.services)}; "
             f"routing {group.service}")
    code, last = await stream(command[0], [*command[1:], "-p", group.project, "-f", FILE,
                                           "build"], source,
                              {**os.environ, **runtime.engine_env}, log, timeout,
                              "compose build", {})
    if code != 0:
        raise BuildFailed(f"compose build exited with code {code}" + (f": {last}" if last else ""))
    return group


async def up(runtime: Runtime, source: Path, compose_file: str, instance: str, app: str,
             deployment_id: int, setting: str | None, port: int, env: Mapping[str, str],
             log: DeployLog, state_dir: Path) -> ContainerInfo:
    """Start the group; return the routed service's container. Raises StartFailed."""
    text = (source / compose_file).read_text(errors="replace")
    data, group = rewrite(text, compose_file, instance, app, deployment_id, setting, port, env)
    (source / FILE).write_text(json.dumps(data))
    _remember(state_dir, group.project, data)
    command = cli()
    code, last = await stream(command[0], [*command[1:], "-p", group.project, "-f", FILE, "up",
                                           "-d", "--no-build"], source,
                              {**os.environ, **runtime.engine_env}, log, 300,
                              "compose up", env)
    if code != 0:
        raise StartFailed(f"compose up exited with code {code}" + (f": {last}" if last else ""))
    found = await runtime.list_containers({PROJECT_LABEL: group.project,
                                           SERVICE_LABEL: group.service})
    if not found:
        raise StartFailed(f"compose up started no container for service {group.service}")
    info = found[0]
    if not info.running or info.host_port is None:
        output = (await runtime.logs(info.id, tail=5)).strip()
        detail = f"; last output: {output.splitlines()[-1]}" if output else ""
        raise StartFailed(f"service {group.service} exited at once (exit code "
                          f"{info.exit_code}){detail}")
    return info


def _remember(state_dir: Path, project: str, data: dict[str, Any]) -> None:
    """Keep what `down` needs (service and network names; no build contexts, which are
    gone by then) until the group is removed."""
    state_dir.mkdir(parents=True, exist_ok=True)
    services = {name: {"image": spec.get("image") or "none",
                       **({"networks": spec["networks"]} if spec.get("networks") else {})}
                for name, spec in data["services"].items()}
    kept = {"version": str(data.get("version", "3")), "services": services}
    if isinstance(data.get("networks"), dict):
        kept["networks"] = data["networks"]
    (state_dir / f"{project}.json").write_text(json.dumps(kept))


async def down(runtime: Runtime, state_dir: Path, project: str) -> None:
    """Remove what is left of a group (containers, its networks; volumes stay)."""
    path = state_dir / f"{project}.json"
    if not path.exists():
        return
    try:
        command = await asyncio.to_thread(cli)
    except BuildFailed as exc:
        log.warning("cannot remove compose project %s: %s", project, exc)
        return
    proc = await asyncio.create_subprocess_exec(
        *command, "-p", project, "-f", str(path), "down", "--remove-orphans", "-t", "5",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **runtime.engine_env})
    _, err = await proc.communicate()
    if proc.returncode == 0:
        path.unlink(missing_ok=True)
    else:
        log.warning("compose down %s failed: %s", project, err.decode(errors="replace").strip())


async def sweep(state_dir: Path, runtime: Runtime, instance: str, app: str) -> None:
    """`down` every remembered group of `app` that has no running container left (retired,
    failed, or removed at start-up). Called between the app's deploys, which never overlap."""
    if not state_dir.is_dir():
        return
    prefix = container_name(instance, app, 0)[:-1]  # rivetr-<instance>-<app>-
    for path in sorted(state_dir.glob(f"{prefix}*.json")):
        project = path.stem
        if not project[len(prefix):].isdigit():
            continue  # another app whose name starts with this one's
        with contextlib.suppress(RivetrError):
            running = [c for c in await runtime.list_containers({PROJECT_LABEL: project})
                       if c.running]
            if not running:
                await down(runtime, state_dir, project)
