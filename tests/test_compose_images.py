"""Which images a compose release runs when it starts again (restart, rollback): pure logic
and the rewrite that uses them, no Docker."""

from __future__ import annotations

from typing import cast

import pytest
import yaml

from rivetr_git.errors import StartFailed
from rivetr_git.pipeline.builders.compose import Limits, rewrite
from rivetr_git.pipeline.builders.compose_images import building, by_service, of_release
from rivetr_git.runtime.base import Runtime
from tests.fakes import FakeRuntime

RELEASE = "rivetr-inst/shop:3"
FILE = """\
services:
  web: {build: ./web}
  Api: {build: ./api}
  db: {image: postgres}
"""


def test_each_building_service_gets_the_image_its_release_built() -> None:
    services = yaml.safe_load(FILE)["services"]
    assert building(services) == ["web", "Api"]
    built = {RELEASE, f"{RELEASE}-api", "rivetr-inst/shop:4"}
    assert by_service(["web", "Api"], RELEASE, built) == {
        "web": RELEASE,
        "Api": f"{RELEASE}-api",  # tags are lower case
    }
    # Routed then was Api (compose_service changed since): still each its own image.
    assert by_service(["web", "Api"], RELEASE, {RELEASE, f"{RELEASE}-web"}) == {
        "web": f"{RELEASE}-web",
        "Api": RELEASE,
    }


@pytest.mark.parametrize(
    "existing",
    [
        {f"{RELEASE}-api"},  # the routed image pruned
        {RELEASE},  # two services without an image: which was routed cannot be told
        set(),
    ],
)
def test_a_release_with_images_missing_is_refused_with_advice(existing: set[str]) -> None:
    with pytest.raises(StartFailed, match="push a commit to build the group again"):
        by_service(["web", "Api"], RELEASE, existing)


async def test_of_release_reads_the_engine_and_a_fresh_deploy_needs_nothing() -> None:
    fake = FakeRuntime()
    fake.images |= {RELEASE, f"{RELEASE}-api", "rivetr-inst/other:3-web"}
    runtime = cast(Runtime, fake)
    services = yaml.safe_load(FILE)["services"]
    assert await of_release(runtime, services, None) is None
    assert await of_release(runtime, services, RELEASE) == {
        "web": RELEASE,
        "Api": f"{RELEASE}-api",
    }


def test_rewrite_runs_the_release_images_and_limits_every_service() -> None:
    images = {"web": f"{RELEASE}-web", "Api": RELEASE}
    data, group = rewrite(
        yaml.safe_load(FILE),
        "compose.yaml",
        "inst",
        "shop",
        9,  # the restart's own deployment: project and labels, not images
        "web",
        5000,
        limits=Limits(cpus=0.5, memory=64),
        images=images,
    )
    services = data["services"]
    assert group.project == "rivetr-inst-shop-9" and group.image == f"{RELEASE}-web"
    assert {s: spec["image"] for s, spec in services.items()} == {**images, "db": "postgres"}
    assert all(spec["labels"]["rivetr.deployment"] == "9" for spec in services.values())
    for spec in services.values():
        assert (spec["mem_limit"], spec["memswap_limit"], spec["cpus"]) == (64, 64, 0.5)
