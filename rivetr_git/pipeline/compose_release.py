"""Restarts and rollbacks of a compose app (config:set, limits:set, ps:restart, rollback).

A new group is started from the release's images, nothing rebuilt: the release's commit is
exported again for its compose file (and what the file refers to), which is checked and
rewritten like on a push, with the env and limits of now (a rollback: its own env) and the
images the release built (builders/compose.py, `image`). It is then health-checked,
switched and the old group drained and removed, like any deploy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from rivetr_git.errors import StartFailed
from rivetr_git.models import Deployment
from rivetr_git.pipeline import checkout
from rivetr_git.pipeline.builders.context import extract
from rivetr_git.pipeline.builders.detect import COMPOSE_FILES
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.store.repos import Repos


async def prepare(repos: Repos, d: Deployment, build_dir: Path, out: DeployLog) -> str:
    """Export `d`'s commit into build_dir/src, where compose.up expects the tree; the
    compose file to start. Raises StartFailed when the commit has none."""
    export = await checkout.checkout(repos, d.app_name, d.commit_sha, build_dir, out)
    source = build_dir / "src"
    await asyncio.to_thread(extract, export.path, source)
    found = next((name for name in COMPOSE_FILES if (source / name).is_file()), None)
    if found is None:
        raise StartFailed(f"commit {d.commit_sha[:7]} has no compose file to start the group from")
    out.info(f"starting the group of release #{d.rollback_of} again from its images ({found})")
    return found
