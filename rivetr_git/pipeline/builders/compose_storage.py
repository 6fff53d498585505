"""A compose group's storage and logs, as the server sets them (compose.up calls this).

Each deployment is a compose project of its own, and `down -v` of a retired group would take
its named volumes with it. So the volumes a file declares belong to the app instead: each
gets the app volume's name (rivetr-<instance>-<app>-<name>, as storage:mount names them),
is created by the server with the app's labels, and is `external` to the project, so no
`down` removes it; only `apps:destroy --purge-data` does. The pushed file can say neither
`name` nor `external` (compose_policy refuses both): only the server points a volume at
one of the app's. Every service also logs with the server's json-file caps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rivetr_git.pipeline.labels import labels
from rivetr_git.pipeline.mounts import volume_name
from rivetr_git.runtime.base import LABEL_VOLUME, Runtime


def apply(
    data: dict[str, Any], instance: str, app: str, log_options: Mapping[str, str]
) -> dict[str, str]:
    """Make the declared volumes the app's and cap every service's logs, in `data` (a
    rewritten, checked file); return {engine volume name: declared name}."""
    volumes: dict[str, str] = {}
    declared = data.get("volumes")
    if isinstance(declared, dict):
        for key, spec in declared.items():
            name = volume_name(instance, app, key)
            declared[key] = {**dict(spec or {}), "name": name, "external": True}
            declared[key].pop("driver", None)  # external volumes take no driver
            declared[key].pop("labels", None)  # ... nor labels: the server's are on it
            volumes[name] = key
    if log_options:
        for spec in data["services"].values():
            spec["logging"] = {"driver": "json-file", "options": dict(log_options)}
    return volumes


async def prepare(runtime: Runtime, data: dict[str, Any], instance: str, app: str) -> None:
    """`apply` the server's storage and logs to `data`, and create the app's volumes it
    mounts (kept as they are when they exist)."""
    for name, short in apply(data, instance, app, runtime.log_options).items():
        await runtime.create_volume(name, {**labels(instance, app), LABEL_VOLUME: short})
