"""Stage *cloning*: export the pushed commit from the bare repo into the build dir."""

from __future__ import annotations

from pathlib import Path

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.log import DeployLog
from rivetr_git.store.repos import Export, Repos


async def checkout(repos: Repos, app: str, sha: str, build_dir: Path, log: DeployLog) -> Export:
    """Export the commit's tree as a tar (the build context, at `.path`), saying which
    submodules it leaves out."""
    export = await repos.export(app, sha, build_dir / "context.tar")
    log.info(f"exported {sha[:7]}: {export.files} files, {_size(export.size)}")
    if export.submodules:
        log.error(f"{submodules_note(export.submodules)}; a build that needs them fails")
    return export


def submodules_note(paths: tuple[str, ...]) -> str:
    """What happened to a pushed tree's submodules, and what to do about it."""
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return (
        f"submodules in a pushed tree are not fetched, so {shown} "
        f"{'is' if len(paths) == 1 else 'are'} empty in the build: vendor the code "
        f"(git rm --cached {paths[0]}, then commit its files), or fetch it in the "
        "Dockerfile if it is public (e.g. RUN git clone URL)"
    )


def explain_build_failure(exc: BuildFailed, export: Export) -> BuildFailed:
    """`exc`, saying that the tree's submodules were left out when there were any."""
    if not export.submodules:
        return exc
    return BuildFailed(f"{exc.reason} ({submodules_note(export.submodules)})")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
