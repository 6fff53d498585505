"""Git-host webhooks: POST /hooks/{github,gitlab,gitea}/APP.

The signature is checked over the raw body before it is parsed, in constant time: GitHub
and Gitea (also Forgejo) sign it with HMAC-SHA256 of the app's webhook secret, GitLab sends
the secret itself. A push to the app's branch deploys (fetched from the host, so the
commit comes from the configured URL, never from the payload); everything else is
answered 202 with the reason, `ping` 200. A delivery ID seen before deploys nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from rivetr_git.api.replies import ApiError, ok
from rivetr_git.errors import RivetrError
from rivetr_git.models import App
from rivetr_git.pipeline.deployer import Job
from rivetr_git.pipeline.git_source import GitSources
from rivetr_git.store.database import Store

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
ZERO_SHA = "0" * 40
SKIP = "[skip deploy]"


@dataclass(frozen=True)
class Delivery:
    event: str  # "push", "tag_push", "ping" or the host's own name for others
    delivery: str | None
    ref: str
    after: str
    message: str  # the head commit's message


def _signed(secret: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(digest.encode(), given.removeprefix("sha256=").encode())


def verify(host: str, secret: str, body: bytes, headers: Any) -> bool:
    if host == "gitlab":
        given = headers.get("X-Gitlab-Token") or ""
        return hmac.compare_digest(secret.encode(), given.encode())
    if host == "github":
        return _signed(secret, body, headers.get("X-Hub-Signature-256"))
    given = headers.get("X-Gitea-Signature") or headers.get("X-Forgejo-Signature")
    return _signed(secret, body, given)


def _head_message(payload: dict[str, Any], after: str) -> str:
    head = payload.get("head_commit")
    if isinstance(head, dict):
        return str(head.get("message") or "")
    for commit in payload.get("commits") or []:  # GitLab: find the pushed head among them
        if isinstance(commit, dict) and commit.get("id") == after:
            return str(commit.get("message") or "")
    return ""


def parse(host: str, body: bytes, headers: Any) -> Delivery:
    """The event of a verified delivery, in each host's documented shape."""
    if host == "github":
        event = headers.get("X-GitHub-Event", "")
        delivery = headers.get("X-GitHub-Delivery")
    elif host == "gitlab":
        event = {"Push Hook": "push", "Tag Push Hook": "tag_push"}.get(
            headers.get("X-Gitlab-Event", ""), headers.get("X-Gitlab-Event", "")
        )
        delivery = headers.get("X-Gitlab-Event-UUID") or headers.get("X-Gitlab-Webhook-UUID")
    else:
        event = headers.get("X-Gitea-Event") or headers.get("X-Forgejo-Event") or ""
        delivery = headers.get("X-Gitea-Delivery") or headers.get("X-Forgejo-Delivery")
    if event == "ping":
        return Delivery("ping", delivery, "", "", "")
    try:
        payload = json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid", "the body is not JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid", "the body is not a JSON object")
    after = str(payload.get("after") or "")
    return Delivery(
        event, delivery, str(payload.get("ref") or ""), after, _head_message(payload, after)
    )


async def read_body(request: web.Request) -> bytes:
    """The raw body, refused past MAX_BODY (counted, not trusted from Content-Length)."""
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, "too_large", f"webhook bodies are limited to {MAX_BODY} bytes")
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ApiError(413, "too_large", f"webhook bodies are limited to {MAX_BODY} bytes")
    return body


class Webhooks:
    def __init__(
        self, store: Store, sources: GitSources, on_queued: Callable[[Job, float], None]
    ) -> None:
        self._store = store
        self._sources = sources
        self._on_queued = on_queued
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        received = asyncio.get_running_loop().time()
        host = request.match_info["host"]
        body = await read_body(request)
        app = await self._store.find_app(request.match_info["app"])
        secret = None if app is None else await self._sources.webhook_secret(app)
        # A missing app, one without a secret and a bad signature answer alike.
        if app is None or secret is None or not verify(host, secret, body, request.headers):
            raise ApiError(401, "bad_signature", "missing or wrong webhook signature")
        hook = parse(host, body, request.headers)
        if hook.event == "ping":
            return ok({"result": "pong"})
        reason = self._ignored(app, hook)
        seen = f"{host}:{hook.delivery}"
        if reason is None and hook.delivery and not await self._store.first_delivery(app, seen):
            reason = f"delivery {hook.delivery} was received before"
        if reason is not None:
            return ok({"result": "ignored", "reason": reason}, status=202)
        task = asyncio.create_task(self._deploy(app, host, received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ok({"result": "deploying", "app": app.name, "commit": hook.after}, status=202)

    def _ignored(self, app: App, hook: Delivery) -> str | None:
        branch = self._sources.branch_of(app)
        if hook.event not in ("push", "tag_push"):
            return f"{hook.event or 'unnamed'} events do not deploy (push events do)"
        if not hook.ref.startswith("refs/heads/"):
            return f"{hook.ref} is not a branch; pushes to {branch} deploy"
        if hook.ref != f"refs/heads/{branch}":
            return f"{hook.ref.removeprefix('refs/heads/')} is not {branch}, the deploy branch"
        if hook.after == ZERO_SHA:
            return f"{branch} was deleted"
        if SKIP in hook.message:
            return f"the head commit says {SKIP}"
        return None

    async def _deploy(self, app: App, host: str, received: float) -> None:
        async def discard(line: str) -> None:
            pass

        try:
            job = await self._sources.fetch_and_submit(app, None, f"{host} webhook", discard)
        except RivetrError as exc:
            log.warning("webhook deploy of %s failed: %s", app.name, exc)
            return
        self._on_queued(job, received)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
