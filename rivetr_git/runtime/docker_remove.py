"""Removing a container, also while another removal of it is under way.

A compose group retired in the background and `apps:destroy` can remove the same container
at once; the engine answers the second with 409 "removal ... is already in progress". That
container is going away: wait until it is gone (the caller may remove its network next),
rather than fail the destroy.
"""

from __future__ import annotations

import time
from typing import Any

import docker.errors

_WAIT = 30.0  # seconds another removal may take


def remove_container(api: Any, container_id: str) -> None:
    """Force-remove a container and its anonymous volumes. Missing is not an error."""
    try:
        api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if exc.status_code != 409 or "already in progress" not in str(exc.explanation or exc):
            raise
        deadline = time.monotonic() + _WAIT
        while time.monotonic() < deadline:
            try:
                api.inspect_container(container_id)
            except docker.errors.NotFound:
                return
            time.sleep(0.1)
        raise
