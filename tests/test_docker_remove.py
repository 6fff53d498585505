"""Container removal races (no engine: a fake API): removing a container that another removal
is already taking away or that stops by itself meanwhile, and listing while one goes away."""

from __future__ import annotations

from collections.abc import Callable

import docker.errors
import pytest
import requests

from rivetr_git.runtime.docker_remove import listed, remove_container


def _api_error(status: int, text: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(text, response=response, explanation=text)


class FakeApi:
    """docker-py's low-level API as far as removal goes (a test double)."""

    def __init__(self, error: docker.errors.APIError | None, gone_after: int) -> None:
        self.error = error
        self.gone_after = gone_after  # inspections until the other removal is done
        self.inspected = 0

    def remove_container(self, container_id: str, force: bool, v: bool) -> None:
        if self.error is not None:
            raise self.error

    def inspect_container(self, container_id: str) -> dict[str, str]:
        self.inspected += 1
        if self.inspected >= self.gone_after:
            raise docker.errors.NotFound("gone")
        return {"Id": container_id}


def test_a_removal_already_in_progress_waits_until_the_container_is_gone() -> None:
    api = FakeApi(_api_error(409, "removal of container abc is already in progress"), 3)
    remove_container(api, "abc")
    assert api.inspected == 3


def test_other_engine_errors_still_fail() -> None:
    api = FakeApi(_api_error(500, "driver failed"), 1)
    with pytest.raises(docker.errors.APIError, match="driver failed"):
        remove_container(api, "abc")
    assert api.inspected == 0


def test_a_missing_container_is_not_an_error() -> None:
    api = FakeApi(docker.errors.NotFound("no such container"), 1)
    remove_container(api, "abc")


VANISHED = "container 5cf9 does not exist in database: no such container"


def _lister(
    errors: list[docker.errors.APIError],
) -> tuple[list[int], Callable[[], list[str]]]:
    """A listing call that raises `errors` one by one, then lists; and its calls."""
    calls: list[int] = []

    def fn() -> list[str]:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return ["c1"]

    return calls, fn


def test_a_listing_that_saw_a_container_vanish_is_tried_again() -> None:
    calls, fn = _lister([_api_error(500, VANISHED), _api_error(500, VANISHED)])
    assert listed(fn) == ["c1"]
    assert len(calls) == 3


def test_a_listing_gives_up_when_the_engine_never_settles() -> None:
    calls, fn = _lister([_api_error(500, VANISHED)] * 50)
    with pytest.raises(docker.errors.APIError, match="no such container"):
        listed(fn)
    assert len(calls) == 10


def test_other_listing_errors_fail_at_once() -> None:
    calls, fn = _lister([_api_error(500, "database is locked")])
    with pytest.raises(docker.errors.APIError, match="locked"):
        listed(fn)
    assert len(calls) == 1


IMPROPER = (
    "cannot remove container abc as it could not be stopped: sending SIGKILL to container "
    "abc: container state improper: stopped"
)


class StoppingApi(FakeApi):
    """Podman's answer while the container stops by itself during a forced removal."""

    def __init__(self, improper: int) -> None:
        super().__init__(None, 1)
        self.improper = improper  # answers before the container has settled
        self.removals = 0

    def remove_container(self, container_id: str, force: bool, v: bool) -> None:
        self.removals += 1
        if self.removals <= self.improper:
            raise _api_error(500, IMPROPER)


def test_a_container_that_stops_during_its_removal_is_removed_on_a_new_try() -> None:
    api = StoppingApi(improper=2)
    remove_container(api, "abc")
    assert api.removals == 3


def test_a_container_that_never_settles_fails_its_removal() -> None:
    api = StoppingApi(improper=99)
    with pytest.raises(docker.errors.APIError, match="state improper"):
        remove_container(api, "abc")
    assert api.removals == 5
