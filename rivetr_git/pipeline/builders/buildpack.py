"""Build type *buildpack*, the built-in builder: a Dockerfile written for the detected
language (lang_python, lang_node, lang_go; a Node-built static site is served like the
static build type), built with the engine like any Dockerfile: same limits, same build-time
env vars (as build args, declared with ARG), same layer cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders import lang_go, lang_node, lang_python
from rivetr_git.pipeline.builders.context import ignore_dockerfile, read_tree, subtree
from rivetr_git.pipeline.builders.detect import Detection, Tree
from rivetr_git.pipeline.builders.recipe import DOCKERFILE, Images, Recipe


def plan(
    tree: Tree,
    found: Detection,
    images: Images,
    arg_names: Sequence[str],
    stage_labels: Mapping[str, str],
) -> Recipe:
    """The Dockerfile (and files) that build the language `found` names; a build stage the
    final image copies from ends labelled with `stage_labels` (the deployment's labels).
    Raises BuildFailed with what to add when the app cannot be started or built."""
    names = sorted(arg_names)
    if found.language == "python":
        return lang_python.plan(tree, images, names)
    if found.language == "node":
        return lang_node.plan(tree, images, names)
    if found.language == "go":
        return lang_go.plan(tree, images, names, stage_labels)
    if found.language == "static":
        assert found.publish_dir is not None  # detection names the directory it serves
        return lang_node.plan_site(tree, images, names, found.publish_dir, stage_labels)
    raise BuildFailed(f"the built-in builder cannot build {found.language!r} projects")


async def prepare(
    context_tar: Path,
    target: Path,
    found: Detection,
    images: Images,
    arg_names: Sequence[str],
    stage_labels: Mapping[str, str],
) -> Recipe:
    """Write the build context to `target`: the pushed tree plus the generated Dockerfile
    (DOCKERFILE) and its files. Returns the recipe (its notes are for the push output)."""
    tree = await asyncio.to_thread(read_tree, context_tar)
    made = plan(tree, found, images, arg_names, stage_labels)
    extra = {DOCKERFILE: made.dockerfile.encode(), **made.extra, **ignore_dockerfile(tree)}
    await asyncio.to_thread(subtree, context_tar, target, ".", "", extra)
    return made
