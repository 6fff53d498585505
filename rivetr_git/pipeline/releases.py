"""The release commands: `releases APP` lists what can run again, `rollback` runs it.

Shared by the SSH receiver and the local CLI (through the daemon's socket); the output is
text lines, written as they happen, and the result an exit code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from rivetr_git.models import App, Deployment, Status
from rivetr_git.pipeline.deployer import Deployer, Job
from rivetr_git.store.database import Store
from rivetr_git.terminal import neutralise

Write = Callable[[str], Awaitable[None]]


def release_table(releases: list[Deployment], live: Deployment | None) -> list[str]:
    """One line per release, newest first; the live one is marked."""
    if not releases:
        return ["no releases yet: a successful deploy makes one"]
    lines = []
    for r in releases:
        mark = "*" if live is not None and r.id == live.id else " "
        again = ""
        if r.rollback_of is not None:
            again = f" ({'restart of' if r.kind == 'restart' else 'rollback to'} #{r.rollback_of})"
        lines.append(
            f"{mark} #{r.id:<5} {r.commit_sha[:7]}  {(r.finished_at or '')[:19]}  "
            f"{neutralise(r.commit_message[:50])}{again}"
        )
    return lines


class ReleaseCommands:
    def __init__(self, store: Store, deployer: Deployer) -> None:
        self._store = store
        self._deployer = deployer

    async def releases(self, app: App, write: Write) -> int:
        live = await self._store.current_deployment(app)
        for line in release_table(await self._store.releases(app), live):
            await write(line)
        return 0

    async def rollback(self, app: App, release: int | None, by: str | None, write: Write) -> int:
        """Run an earlier release again (start, health check, switch, drain); 0 if live."""
        return await follow(await self._deployer.rollback(app, release, by), write)


async def follow(job: Job, write: Write) -> int:
    """Write a queued deployment's output as it happens; 0 once it is live, else 1."""
    lines = job.log.watch()
    try:
        while (line := await lines.get()) is not None:
            try:
                await write(line)
            except (ConnectionError, OSError):
                break  # the caller went away; the deployment carries on
    finally:
        job.log.unwatch(lines)
    final = await job.result
    return 0 if final.status is Status.RUNNING else 1
