"""A deployment's log as Server-Sent Events: every line so far, then each new one while it
runs, and last a `result` event with its final status."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from rivetr_git.models import Deployment
from rivetr_git.pipeline.deployer import Job
from rivetr_git.store.database import Store


def _event(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "".join(f"data: {part}\n" for part in data.split("\n")) + "\n").encode()


async def stream_log(
    request: web.Request, store: Store, deployment: Deployment, job: Job | None
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    if job is None:  # finished (or never ran here): what was stored
        for stored in await store.get_logs(deployment.id):
            await response.write(_event(stored.line))
    else:
        lines = job.log.watch()
        try:
            while (line := await lines.get()) is not None:
                await response.write(_event(line))
        finally:
            job.log.unwatch(lines)
        await asyncio.shield(job.result)
    final = await store.get_deployment(deployment.id)
    result = {"id": final.id, "status": final.status.value, "error": final.error_message}
    await response.write(_event(json.dumps(result), "result"))
    await response.write_eof()
    return response
