"""What a push means: which ref updates deploy, which are only stored, and the outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rivetr_git.models import App, Status
from rivetr_git.pipeline.deployer import Deployer
from rivetr_git.pipeline.log import ERROR, HEADER
from rivetr_git.store.repos import ZERO_SHA

Write = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str


class PushHandler:
    """Turns the ref updates of one push into deployments and streams their output."""

    def __init__(self, deployer: Deployer, default_branch: str) -> None:
        self._deployer = deployer
        self._default_branch = default_branch

    async def handle(
        self, app: App, updates: list[RefUpdate], pushed_by: str, write: Write
    ) -> bool:
        """Return True when every deploy this push asked for went live."""
        deploy_ref = f"refs/heads/{app.deploy_branch or self._default_branch}"
        ok = True
        writer = _Relay(write)
        for update in updates:
            if update.ref != deploy_ref:
                kind = "tag" if update.ref.startswith("refs/tags/") else "ref"
                name = update.ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
                verb = "deleted" if update.new == ZERO_SHA else "stored"
                await writer(
                    f"{HEADER}{kind if kind == 'tag' else 'branch'} {name} {verb}, "
                    f"not deployed (pushes to {deploy_ref.removeprefix('refs/heads/')} "
                    "deploy)"
                )
                continue
            if update.new == ZERO_SHA:  # the pre-receive hook refuses this; belt and braces
                await writer(f"{ERROR}the deploy branch cannot be deleted")
                ok = False
                continue
            job = await self._deployer.submit(app, update.new, pushed_by)
            lines = job.log.watch()
            try:
                while (line := await lines.get()) is not None:
                    await writer(line)
            finally:
                job.log.unwatch(lines)
            final = await asyncio.shield(job.result)
            ok = ok and final.status is Status.RUNNING
        return ok


class _Relay:
    """Writes to the pusher until the pusher goes away, then silently drops lines."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._gone = False

    async def __call__(self, line: str) -> None:
        if self._gone:
            return
        try:
            await self._write(line)
        except (ConnectionError, OSError):
            self._gone = True
