"""Names and labels that tie runtime objects to this server, its apps and deployments."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rivetr_git.runtime.base import LABEL_APP, LABEL_DEPLOYMENT, LABEL_INSTANCE

LABEL_PROCESS = "rivetr.process"  # a release's process: `web.1`, `worker.2`, ...


def instance_id(data_dir: Path) -> str:
    """Unique per data dir, so two servers on one engine never touch each other's containers."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


def labels(
    instance: str, app: str | None = None, deployment_id: int | None = None
) -> dict[str, str]:
    out = {LABEL_INSTANCE: instance}
    if app is not None:
        out[LABEL_APP] = app
    if deployment_id is not None:
        out[LABEL_DEPLOYMENT] = str(deployment_id)
    return out


def image_repository(instance: str, app: str) -> str:
    return f"rivetr-{instance}/{app}"


def image_tag(instance: str, app: str, deployment_id: int) -> str:
    return f"{image_repository(instance, app)}:{deployment_id}"


def container_name(instance: str, app: str, deployment_id: int) -> str:
    return f"rivetr-{instance}-{app}-{deployment_id}"


def network_name(instance: str, app: str) -> str:
    """The app's own network: its releases, processes and one-off runs, no other app's."""
    return f"rivetr-{instance}-{app}"
