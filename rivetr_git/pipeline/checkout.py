"""Stage *cloning*: export the pushed commit from the bare repo into the build dir."""

from __future__ import annotations

from pathlib import Path

from rivetr_git.pipeline.log import DeployLog
from rivetr_git.store.repos import Repos


async def checkout(repos: Repos, app: str, sha: str, build_dir: Path, log: DeployLog) -> Path:
    """Return the path of a tar holding the commit's tree (the build context)."""
    export = await repos.export(app, sha, build_dir / "context.tar")
    log.info(f"exported {sha[:7]}: {export.files} files, {_size(export.size)}")
    return export.path


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
