"""Notification channels: where an event goes besides the server's webhook settings.

A channel is a URL. `http://` and `https://` URLs are rivetr's own kind, the signed JSON
webhook (webhooks.py, the same body and signature as `webhook_url`); every other scheme
is handed to Apprise, which speaks to Slack, Discord, Teams, Telegram, email (`mailto://`),
generic JSON endpoints (`json://`) and many more. Channel URLs carry credentials: callers
store them encrypted (secrets/channels.py) and show them through `mask`.

Deliveries run in the background with retries and never raise into a deploy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import apprise

from rivetr_git.models import App

log = logging.getLogger(__name__)

WEBHOOK_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class Channel:
    id: int
    app: str | None  # None: server-wide (every app's events)
    url: str  # plaintext: never logged, shown only through mask()
    events: frozenset[str] | None = None  # None: every event

    def wants(self, event: str) -> bool:
        return self.events is None or event in self.events


# The channels an app's event goes to: the app's own and the server-wide ones.
ChannelSource = Callable[[App], Awaitable[Sequence[Channel]]]
# Sends the signed JSON body of the event to a webhook URL; True when delivered.
PostJson = Callable[[str], Awaitable[bool]]


def is_webhook(url: str) -> bool:
    return url.lower().startswith(WEBHOOK_SCHEMES)


def check(url: str) -> str:
    """The URL if some channel kind takes it; else ValueError saying what to give."""
    if any(c.isspace() for c in url) or not url:
        raise ValueError("give one URL without spaces")
    if is_webhook(url) or apprise.Apprise.instantiate(url) is not None:
        return url
    raise ValueError(
        "no channel kind takes this URL; give an Apprise URL such as "
        "slack://TOKEN_A/TOKEN_B/TOKEN_C, discord://ID/TOKEN, mailto://user:pass@host, "
        "json://host/path, or an https:// URL for rivetr's signed JSON webhook"
    )


def mask(url: str) -> str:
    """The URL with its secrets hidden (Apprise's privacy view; a webhook shows its host)."""
    if is_webhook(url):
        scheme, _, rest = url.partition("://")
        host = rest.split("/", 1)[0].rpartition("@")[2]
        return f"{scheme}://{host}/..."
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return "<invalid URL>"
    return str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]


def _send_apprise(url: str, title: str, body: str) -> bool:
    """Blocking (Apprise's plugins use requests and smtplib): run in a thread."""
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return False
    return bool(notifier.notify(title=title, body=body))


async def send(channel: Channel, title: str, body: str, post_json: PostJson) -> bool:
    """One attempt; True when the channel took it."""
    if is_webhook(channel.url):
        return await post_json(channel.url)
    return await asyncio.to_thread(_send_apprise, channel.url, title, body)


async def deliver(
    channel: Channel,
    event: str,
    title: str,
    body: str,
    post_json: PostJson,
    attempts: int,
    retry_delay: float,
) -> bool:
    """Up to `attempts` tries, backing off; logs (masked) when it gives up."""
    if is_webhook(channel.url):
        return await post_json(channel.url)  # retries of its own (webhooks.py)
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            await asyncio.sleep(retry_delay * 2 ** (attempt - 2))
        try:
            if await send(channel, title, body, post_json):
                return True
        except Exception as exc:  # a channel's bug must never reach a deploy
            log.warning("channel #%s: %s", channel.id, type(exc).__name__)
    log.warning(
        "%s to channel #%s (%s) failed after %d attempt(s)",
        event,
        channel.id,
        mask(channel.url),
        attempts,
    )
    return False
