"""The untagged stage images of multi-stage builds (recipe.stage_end labels them) go with
their release: at keep_releases pruning, when the deploy fails, at apps:destroy. The real
pipeline with a FakeRuntime whose builds leave such an image; tests/test_stage_images.py
checks the same against Docker."""

from __future__ import annotations

import pytest

from rivetr_git.models import Status
from rivetr_git.pipeline.after_switch import cleanup
from rivetr_git.runtime.base import LABEL_DEPLOYMENT
from tests.fakes import FakeRuntime
from tests.test_deploy_logic import World, until
from tests.test_deploy_logic import world as world  # the fixture

pytestmark = pytest.mark.timeout(20)


def stage_deployments(world: World) -> set[int]:
    return {int(tags[LABEL_DEPLOYMENT]) for tags in world.runtime.stage_images.values()}


async def test_stage_images_go_with_their_releases_and_all_at_destroy(world: World) -> None:
    world.runtime.leaves_stages = True
    app = await world.app("st-prune")
    other = await world.app("st-other")
    kept = await world.deploy(other, "another app's")
    ids = [(await world.deploy(app, f"v{n}")).id for n in range(5)]
    assert world.settings.keep_releases == 3
    await until(lambda: stage_deployments(world) == {kept.id, *ids[-3:]})
    assert len(world.runtime.images) == 4  # the releases' images: 3 of `app`, 1 of `other`
    await world.deployer.destroy(await world.store.get_app(app.name))
    assert stage_deployments(world) == {kept.id}


async def test_a_failed_build_leaves_no_stage_image(world: World) -> None:
    world.runtime.leaves_stages = True
    app = await world.app("st-fail")
    live = await world.deploy(app, "good")
    world.runtime.build_error = "boom"
    failed = await world.deploy(app, "bad")
    assert failed.status is Status.FAILED
    assert stage_deployments(world) == {live.id}


async def test_the_stage_of_a_deploy_newer_than_the_kept_releases_stays() -> None:
    """A prune that runs while the app's next deploy builds leaves that build's stage."""
    runtime = FakeRuntime()
    repository, owner = "rivetr-i/a", {"rivetr.instance": "i", "rivetr.app": "a"}
    for deployment in ("3", "5", "6", "8"):
        runtime.stage_images[f"sha256:{deployment}"] = {**owner, LABEL_DEPLOYMENT: deployment}
    runtime.stage_images["sha256:b"] = {**owner, "rivetr.app": "b", LABEL_DEPLOYMENT: "4"}
    keep = {f"{repository}:6", f"{repository}:5"}
    await cleanup.prune_release_images(runtime, cleanup.BuildGate(), repository, keep, owner)
    assert sorted(runtime.stage_images) == ["sha256:5", "sha256:6", "sha256:8", "sha256:b"]
