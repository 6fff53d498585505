"""Stage *starting*: run the new image with PORT set, published on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Mapping

from rivetr_git.errors import DecryptionFailed, StartFailed
from rivetr_git.pipeline.labels import LABEL_PROCESS, container_name, labels, network_name
from rivetr_git.runtime.base import ContainerInfo, ContainerSpec, Mount, Runtime
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.terminal import neutralise

DEFAULT_APP_PORT = 5000


async def app_port(runtime: Runtime, image: str, configured: int | None) -> int:
    """The app setting, else the image's single EXPOSEd port, else 5000."""
    if configured is not None:
        return configured
    exposed = await runtime.exposed_ports(image)
    return exposed[0] if len(exposed) == 1 else DEFAULT_APP_PORT


async def release_env(env_vars: EnvVars, deployment_id: int) -> dict[str, str]:
    """The env the deployment was created with, decrypted. A value that does not decrypt
    fails the start before any container exists: ciphertext never reaches an app."""
    try:
        return await env_vars.for_deployment(deployment_id)
    except DecryptionFailed as exc:
        raise StartFailed(f"{exc}; no container was started") from None


async def start(
    runtime: Runtime,
    instance: str,
    app: str,
    deployment_id: int,
    image: str,
    port: int,
    env: Mapping[str, str],
    cpus: float | None = None,
    memory: int | None = None,
    mounts: tuple[Mount, ...] = (),
    command: list[str] | None = None,
    index: int = 1,
) -> ContainerInfo:
    """Start the web container with `env` and PORT (`command`: the Procfile's, else the
    image's own); raise StartFailed (with its last output) if it is not up."""
    spec = ContainerSpec(
        name=container_name(instance, app, deployment_id) + (f"-web-{index}" if index > 1 else ""),
        image=image,
        port=port,
        env={**env, "PORT": str(port)},
        labels={**labels(instance, app, deployment_id), LABEL_PROCESS: f"web.{index}"},
        cpus=cpus,
        memory=memory,
        network=network_name(instance, app),
        mounts=mounts,
        command=command,
    )
    info = await runtime.run(spec)
    if not info.running or info.host_port is None:
        output = (await runtime.logs(info.id, tail=5)).strip()
        detail = f"; last output: {neutralise(output.splitlines()[-1])}" if output else ""
        which = f"web.{index} " if index > 1 else ""
        raise StartFailed(f"{which}container exited at once (exit code {info.exit_code}){detail}")
    return info
