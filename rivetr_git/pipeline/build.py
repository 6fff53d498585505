"""Stage *building*: build the image from the app's Dockerfile, streaming every line."""

from __future__ import annotations

from pathlib import Path

from rivetr_git.pipeline.labels import image_tag
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.runtime.base import BuildSpec, Runtime


async def build(
    runtime: Runtime,
    context_tar: Path,
    instance: str,
    app: str,
    deployment_id: int,
    dockerfile: str,
    log: DeployLog,
) -> str:
    """Build and return the image tag. Raises BuildFailed with the builder's message."""
    tag = image_tag(instance, app, deployment_id)
    # No build labels: the legacy builder turns each into a LABEL step, a container and
    # a layer on every push. The tag's repository (rivetr-<instance>/<app>) identifies it.
    spec = BuildSpec(context_tar=context_tar, tag=tag, dockerfile=dockerfile)
    await runtime.build(spec, lambda line: log.output(line, "build"))
    return tag
