"""Outgoing events: deploy, rollback and crash events POSTed in the background, signed,
retried, and sent to the notification channels (channels.py) the same way.

`Notifier.notify()` never waits for a receiver and never fails a deploy: it builds the body
once, schedules one delivery task per URL (the server's `webhook_url` and the app's own, the
same URL only once) and returns. A delivery tries up to `attempts` times, backing off
exponentially, on connection errors, timeouts, 5xx and 429; any other answer is final.

Receivers check `X-Rivetr-Signature: sha256=<hex HMAC-SHA256(secret, body)>` (the scheme of
GitHub's X-Hub-Signature-256) with `verify()`; `X-Rivetr-Delivery` is the event's id, the same
on every URL and every retry, so receivers can drop duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from rivetr_git import __version__
from rivetr_git.models import App
from rivetr_git.notify.channels import Channel, ChannelSource, deliver, send
from rivetr_git.settings import Settings

log = logging.getLogger(__name__)

EVENTS = frozenset(
    {
        "deploy.started",
        "deploy.succeeded",
        "deploy.failed",
        "deploy.rolled_back",
        "container.crashed",
        "app.unhealthy",
        "cert.renewed",
        "cert.failed",
    }
)
RESERVED_FIELDS = frozenset({"event", "app", "time", "id"})


def sign(secret: str, body: bytes) -> str:
    """The X-Rivetr-Signature value for `body`: 'sha256=' + hex HMAC-SHA256(secret, body)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, body: bytes, header: str) -> bool:
    """True when `header` is the signature of these exact body bytes (constant-time compare).

    An empty secret verifies nothing: anyone can compute an HMAC with an empty key.
    """
    if not secret:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.encode())


def _release(fields: Mapping[str, object]) -> str:
    """'deploy #3 (abc1234)', leaving out whichever of the two is missing."""
    text = "deploy"
    if fields.get("deployment_id") is not None:
        text += f" #{fields['deployment_id']}"
    if fields.get("commit"):
        text += f" ({str(fields['commit'])[:7]})"
    return text


def render_text(event: str, app_name: str, fields: Mapping[str, object]) -> str:
    """One human line for an event, e.g. 'hello: deploy #3 (abc1234) is live at http://...'.

    Uses `deployment_id`, `commit`, `url` and `reason` when present. For deploy.rolled_back
    the deployment and commit are the release serving again.
    """
    release = _release(fields)
    reason = f": {fields['reason']}" if fields.get("reason") else ""
    if event == "deploy.started":
        line = f"{release} started"
    elif event == "deploy.succeeded":
        line = f"{release} is live" + (f" at {fields['url']}" if fields.get("url") else "")
    elif event == "deploy.failed":
        line = f"{release} failed{reason}"
    elif event == "deploy.rolled_back":
        line = f"rolled back to {release}{reason}"
    elif event == "container.crashed":
        line = f"container of {release} crashed{reason}"
    elif event == "app.unhealthy":
        line = f"{release} stopped answering and is restarted{reason}"
    elif event == "cert.renewed":
        line = (
            f"new certificate for {fields.get('names', '')}, valid until "
            f"{fields.get('not_after', '?')}"
        )
    elif event == "cert.failed":
        line = f"certificate order failed{reason}"
    else:
        raise ValueError(f"unknown event {event!r}; expected one of {sorted(EVENTS)}")
    return f"{app_name}: {line}"


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions; these three are all it asks to escape.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _where(url: str) -> str:
    """The URL without path, query or credentials: webhook URLs often embed a token."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{parts.hostname}{port}/..."


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return type(exc).__name__  # str(exc) of some errors repeats the whole URL


class Notifier:
    """Sends events to the configured webhook URLs in background tasks."""

    def __init__(
        self,
        settings: Settings,
        *,
        retry_delay: float = 0.5,
        attempts: int = 5,
        timeout: float = 10.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._settings = settings
        self._retry_delay = retry_delay  # waits retry_delay, 2x, 4x, ... between attempts
        self._attempts = attempts
        self._timeout = timeout  # total seconds per attempt
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._channels: ChannelSource | None = None

    def use_channels(self, source: ChannelSource) -> None:
        """Also send every event to the app's and the server-wide channels (notify:add)."""
        self._channels = source

    def notify(self, event: str, app: App, **fields: object) -> None:
        """Schedule delivery of `event` for `app` and return at once; never raises at run time.

        `fields` (e.g. deployment_id, commit, reason, url) go into the JSON payload as they are.
        An unknown event name or a field named like a payload key is a programming error:
        ValueError.
        """
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {sorted(EVENTS)}")
        if clash := RESERVED_FIELDS & fields.keys():
            raise ValueError(f"fields {sorted(clash)} would overwrite the payload's own keys")
        try:
            urls = dict.fromkeys(u for u in (self._settings.webhook_url, app.webhook_url) if u)
            if not urls and self._channels is None:
                return
            if self._closed:
                log.warning("webhook %s for %s dropped: the notifier is closed", event, app.name)
                return
            loop = asyncio.get_running_loop()
            event_id = uuid.uuid4().hex
            body = self._body(event, event_id, app, fields)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"rivetr-git/{__version__}",
                "X-Rivetr-Event": event,
                "X-Rivetr-Delivery": event_id,
            }
            if self._settings.webhook_secret:
                headers["X-Rivetr-Signature"] = sign(self._settings.webhook_secret, body)
            for url in urls:
                if not url.lower().startswith(("http://", "https://")):
                    log.warning("webhook %s to %s not sent: invalid URL", event, _where(url))
                    continue
                self._spawn(loop, self._deliver(url, body, headers), f"webhook {event_id}")
            if self._channels is not None:
                text = render_text(event, app.name, fields)
                fan_out = self._to_channels(self._channels, event, app, text, body, headers)
                self._spawn(loop, fan_out, f"channels {event_id}")
        except Exception as exc:
            log.warning("webhook %s for %s not sent: %s", event, app.name, exc)

    def _spawn(self, loop: asyncio.AbstractEventLoop, work: Any, name: str) -> None:
        task = loop.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _to_channels(
        self,
        source: ChannelSource,
        event: str,
        app: App,
        text: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> None:
        try:
            wanted = [c for c in await source(app) if c.wants(event)]
        except Exception as exc:  # the database or the key: logged, never raised
            log.warning("channels of %s not read for %s: %s", app.name, event, exc)
            return
        loop = asyncio.get_running_loop()
        for channel in wanted:
            work = deliver(
                channel,
                event,
                f"rivetr-git: {event}",
                text,
                lambda url: self._deliver(url, body, headers),
                self._attempts,
                self._retry_delay,
            )
            self._spawn(loop, work, f"channel {channel.id} {event}")

    async def test(self, app_name: str, targets: list[Channel]) -> list[bool]:
        """One test message to each of `targets`, waited for: whether each took it."""
        event_id = uuid.uuid4().hex
        payload = {"event": "test", "app": app_name, "id": event_id}
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"rivetr-git/{__version__}",
            "X-Rivetr-Event": "test",
            "X-Rivetr-Delivery": event_id,
        }
        if self._settings.webhook_secret:
            headers["X-Rivetr-Signature"] = sign(self._settings.webhook_secret, body)
        text = f"{app_name}: a test notification from rivetr-git"
        return list(
            await asyncio.gather(
                *(
                    send(c, "rivetr-git: test", text, lambda u: self._deliver(u, body, headers))
                    for c in targets
                )
            )
        )

    def _body(self, event: str, event_id: str, app: App, fields: Mapping[str, object]) -> bytes:
        payload: dict[str, object]
        if self._settings.webhook_format == "slack":
            payload = {"text": _slack_escape(render_text(event, app.name, fields))}
        else:
            time = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            payload = {"event": event, "app": app.name, "time": time, "id": event_id, **fields}
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)
        return text.encode()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def _deliver(self, url: str, body: bytes, headers: Mapping[str, str]) -> bool:
        event, where = headers["X-Rivetr-Event"], _where(url)
        problem = ""
        for attempt in range(1, self._attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self._retry_delay * 2 ** (attempt - 2))
            try:
                async with self._client().post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
            except aiohttp.InvalidURL:
                log.warning("webhook %s to %s not sent: invalid URL", event, where)
                return False
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = _describe(exc)
                continue
            except Exception as exc:  # a bug here must not end up as an unretrieved task error
                log.warning("webhook %s to %s failed: %s", event, where, type(exc).__name__)
                return False
            if 200 <= status < 300:
                return True
            problem = f"HTTP {status}"
            if status < 500 and status != 429:
                break
        log.warning(
            "webhook %s to %s failed after %d attempt(s): %s", event, where, attempt, problem
        )
        return False

    async def drain(self) -> None:
        """Wait for the deliveries scheduled so far to finish (succeed or give up)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel pending deliveries and close the HTTP session; later events are dropped."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
