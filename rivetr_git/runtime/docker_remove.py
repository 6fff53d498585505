"""Container removal races: removing a container another removal is already taking away or
that stops by itself meanwhile, and listing containers while one goes away.

A compose group retired in the background and `apps:destroy` can remove the same container
at once; the engine answers the second with 409 "removal ... is already in progress". That
container is going away: wait until it is gone (the caller may remove its network next),
rather than fail the destroy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import docker.errors

T = TypeVar("T")

_WAIT = 30.0  # seconds another removal may take
_LIST_TRIES = 10
_REMOVE_TRIES = 5


def remove_container(api: Any, container_id: str) -> None:
    """Force-remove a container and its anonymous volumes. Missing is not an error."""
    for attempt in range(1, _REMOVE_TRIES + 1):
        try:
            api.remove_container(container_id, force=True, v=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if exc.status_code == 409 and "already in progress" in text:
                _wait_until_gone(api, container_id, exc)
                return
            # Podman 4.3 kills a running container it force-removes; when the container
            # stops by itself meanwhile (a one-off whose command ended, one another caller
            # is stopping), the kill fails with "container state improper": try again.
            if "state improper" not in text or attempt == _REMOVE_TRIES:
                raise
        time.sleep(0.1 * attempt)


def _wait_until_gone(api: Any, container_id: str, exc: docker.errors.APIError) -> None:
    deadline = time.monotonic() + _WAIT
    while time.monotonic() < deadline:
        try:
            api.inspect_container(container_id)
        except docker.errors.NotFound:
            return
        time.sleep(0.1)
    raise exc


def listed(fn: Callable[[], T]) -> T:
    """Run a call that lists containers (or measures them), again if a container went away
    during it. Podman 4.3's list endpoints fail as a whole with "container ... does not exist
    in database: no such container" when one is removed between their list and their inspect
    (containers/podman#10120, #11810); a removal is quick, so a few tries see a settled list.
    Docker never answers a filtered list that way."""
    for attempt in range(1, _LIST_TRIES):
        try:
            return fn()
        except docker.errors.APIError as exc:
            if "no such container" not in str(exc.explanation or exc).lower():
                raise
        time.sleep(0.02 * attempt)
    return fn()
