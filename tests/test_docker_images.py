"""Finding images by label (no engine: a fake API that answers as Podman 4.3's does)."""

from __future__ import annotations

from typing import Any

from rivetr_git.runtime.docker_images import labelled_images

IMAGES: list[dict[str, Any]] = [
    {"Id": "sha256:a", "Labels": {"rivetr.instance": "i1", "rivetr.app": "shop"}},
    {"Id": "sha256:b", "Labels": {"rivetr.instance": "i1", "rivetr.app": "blog"}},
    {"Id": "sha256:c", "Labels": {"rivetr.instance": "i2", "rivetr.app": "shop"}},
    {"Id": "sha256:d", "Labels": None},
]


class PodmanLikeApi:
    """Podman 4.3's compatible images endpoint: one label filter works, two find nothing
    (a test double)."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    def images(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        self.asked.append(filters)
        wanted = filters["label"]
        if len(wanted) != 1:
            return []
        key, _, value = wanted[0].partition("=")
        return [i for i in IMAGES if (i["Labels"] or {}).get(key) == value]


def test_every_label_must_match_though_the_engine_is_asked_for_one() -> None:
    api = PodmanLikeApi()
    found = labelled_images(api, {"rivetr.instance": "i1", "rivetr.app": "shop"})
    assert found == {"sha256:a": {"rivetr.instance": "i1", "rivetr.app": "shop"}}
    assert api.asked == [{"label": ["rivetr.instance=i1"]}]


def test_one_label() -> None:
    assert set(labelled_images(PodmanLikeApi(), {"rivetr.app": "shop"})) == {"sha256:a", "sha256:c"}
    assert labelled_images(PodmanLikeApi(), {"rivetr.app": "nothing"}) == {}
