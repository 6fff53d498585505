"""Stage *building*: build the image from the app's Dockerfile, streaming every line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rivetr_git.limits import parse_cpus, parse_memory
from rivetr_git.pipeline.labels import image_tag
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.runtime.base import BuildSpec, Runtime
from rivetr_git.settings import Settings


@dataclass(frozen=True)
class BuildLimits:
    """What one build may use: the settings build_timeout, build_cpu_limit and
    build_memory_limit, parsed. None: no limit."""

    timeout: float  # seconds
    cpus: float | None = None
    memory: int | None = None  # bytes
    memory_text: str = ""  # build_memory_limit as written, e.g. '512m' ('' when none)

    @classmethod
    def from_settings(cls, settings: Settings) -> BuildLimits:
        """Raises ValueError for a value load_settings would have refused."""
        cpus_text = settings.build_cpu_limit.strip()
        memory_text = settings.build_memory_limit.strip()
        return cls(
            timeout=float(settings.build_timeout),
            cpus=parse_cpus(cpus_text) if cpus_text else None,
            memory=parse_memory(memory_text) if memory_text else None,
            memory_text=memory_text,
        )


async def build(
    runtime: Runtime,
    context_tar: Path,
    instance: str,
    app: str,
    deployment_id: int,
    dockerfile: str,
    log: DeployLog,
    *,
    limits: BuildLimits | None = None,
) -> str:
    """Build and return the image tag. Raises BuildFailed with the builder's message, or
    naming the limit (build_timeout, build_memory_limit) the build ran into."""
    tag = image_tag(instance, app, deployment_id)
    # No build labels: the legacy builder turns each into a LABEL step, a container and
    # a layer on every push. The tag's repository (rivetr-<instance>/<app>) identifies it.
    spec = BuildSpec(
        context_tar=context_tar, tag=tag, dockerfile=dockerfile,
        timeout=limits.timeout if limits else None,
        cpus=limits.cpus if limits else None,
        memory=limits.memory if limits else None,
    )
    await runtime.build(spec, lambda line: log.output(line, "build"))
    return tag
