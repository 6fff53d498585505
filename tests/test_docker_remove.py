"""Removing a container that another removal is already taking away (no engine: a fake API)."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from rivetr_git.runtime.docker_remove import remove_container


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
