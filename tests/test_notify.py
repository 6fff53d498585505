"""Webhooks (rivetr_git.notify) against a real aiohttp receiver on 127.0.0.1: no mocks."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from rivetr_git.models import App
from rivetr_git.notify import EVENTS, Notifier, render_text, sign, verify
from rivetr_git.settings import Settings, load_settings

SECRET = "s3cret-for-tests"


@dataclass
class Hit:
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request; `script[path]` lists the statuses to answer, in order (then 200)."""

    base: str = ""
    hits: list[Hit] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def at(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(Hit(request.path, request.headers, await request.read()))
        self.arrived.set()
        if request.path == "/slow":
            await asyncio.sleep(5)
        statuses = self.script.get(request.path, [])
        return web.Response(status=statuses.pop(0) if statuses else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.base = f"http://{host}:{port}"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def make_notifier(receiver: Receiver) -> AsyncIterator[Callable[..., Notifier]]:
    """Notifiers with a fast backoff, closed before the receiver stops."""
    made: list[Notifier] = []

    def make(settings: Settings, **kwargs: Any) -> Notifier:
        kwargs.setdefault("retry_delay", 0.01)
        notifier = Notifier(settings, **kwargs)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        await notifier.close()


def _app(webhook_url: str | None = None) -> App:
    return App(id=1, name="hello", created_at="x", webhook_url=webhook_url)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- JSON events, headers, signatures ---------------------------------------------------------


async def test_json_event_arrives_signed(
    receiver: Receiver, make_notifier: Callable[..., Notifier]
) -> None:
    settings = load_settings(
        env={
            "RIVETR_WEBHOOK_URL": receiver.url("/hook"),
            "RIVETR_WEBHOOK_SECRET": SECRET,
        }
    )
    notifier = make_notifier(settings)
    notifier.notify(
        "deploy.succeeded",
        _app(),
        deployment_id=3,
        commit="abc1234def",
        url="http://hello.localhost:8080/",
    )
    await notifier.drain()

    [hit] = receiver.hits
    payload = hit.json()
    assert payload["event"] == "deploy.succeeded"
    assert payload["app"] == "hello"
    assert payload["deployment_id"] == 3
    assert payload["commit"] == "abc1234def"
    assert payload["url"] == "http://hello.localhost:8080/"
    assert payload["time"].endswith("Z")
    assert len(payload["id"]) == 32 and int(payload["id"], 16) >= 0
    assert set(payload) == {"event", "app", "time", "id", "deployment_id", "commit", "url"}
    # Serialized once, compact and with sorted keys.
    assert hit.body == json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()

    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["User-Agent"].startswith("rivetr-git/")
    assert hit.headers["X-Rivetr-Event"] == "deploy.succeeded"
    assert hit.headers["X-Rivetr-Delivery"] == payload["id"]
    signature = hit.headers["X-Rivetr-Signature"]
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    assert verify(SECRET, hit.body, signature)
    assert not verify(SECRET, hit.body.replace(b"abc1234def", b"abc1234dee"), signature)
    assert not verify("other-secret", hit.body, signature)


def test_sign_and_verify() -> None:
    body = b'{"a":1}'
    assert verify("key", body, sign("key", body))
    assert not verify("key", body + b" ", sign("key", body))
    assert not verify("key", body, "sha256=" + "0" * 64)
    assert not verify("key", body, "")
    assert not verify("key", body, "sha256=é")  # non-ASCII garbage: False, not TypeError
    assert not verify("", body, sign("", body))  # an empty secret proves nothing
    # The well-known HMAC-SHA256 example value, so other languages can check against it.
    assert sign("key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


async def test_no_signature_without_a_secret(
    receiver: Receiver, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier(Settings(webhook_url=receiver.url("/hook")))
    notifier.notify("deploy.started", _app(), deployment_id=4, commit="f" * 40)
    await notifier.drain()
    [hit] = receiver.hits
    assert "X-Rivetr-Signature" not in hit.headers
    assert hit.json()["event"] == "deploy.started"


async def test_global_and_app_urls_both_receive_and_duplicates_collapse(
    receiver: Receiver, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier(Settings(webhook_url=receiver.url("/global")))
    notifier.notify("deploy.failed", _app(receiver.url("/app")), deployment_id=5, reason="boom")
    await notifier.drain()
    assert sorted(h.path for h in receiver.hits) == ["/app", "/global"]
    [to_app], [to_global] = receiver.at("/app"), receiver.at("/global")
    assert to_app.body == to_global.body  # one event, one id
    assert to_app.headers["X-Rivetr-Delivery"] == to_global.headers["X-Rivetr-Delivery"]

    receiver.hits.clear()
    notifier.notify("deploy.failed", _app(receiver.url("/global")), deployment_id=6)
    notifier.notify("container.crashed", _app(None), deployment_id=6)
    await notifier.drain()
    assert [h.path for h in receiver.hits] == ["/global", "/global"]
    assert [h.json()["event"] for h in receiver.hits] == ["deploy.failed", "container.crashed"]


async def test_only_an_app_url(receiver: Receiver, make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(Settings())
    notifier.notify("deploy.started", _app())  # no URL anywhere: nothing to do
    notifier.notify("deploy.started", _app(receiver.url("/app")))
    await notifier.drain()
    assert [h.path for h in receiver.hits] == ["/app"]


async def test_each_event_gets_a_new_id(
    receiver: Receiver, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier(Settings(webhook_url=receiver.url("/hook")))
    for _ in range(3):
        notifier.notify("deploy.started", _app())
    await notifier.drain()
    assert len({h.json()["id"] for h in receiver.hits}) == 3


# --- Slack format -----------------------------------------------------------------------------


async def test_slack_format(receiver: Receiver, make_notifier: Callable[..., Notifier]) -> None:
    settings = Settings(
        webhook_url=receiver.url("/slack"), webhook_format="slack", webhook_secret=SECRET
    )
    notifier = make_notifier(settings)
    notifier.notify(
        "deploy.succeeded",
        _app(),
        deployment_id=3,
        commit="abc1234def5678",
        url="http://hello.localhost:8080/",
    )
    notifier.notify(
        "deploy.failed",
        _app(),
        deployment_id=4,
        commit="0123456789",
        reason="health check: <html> & more",
    )
    await notifier.drain()
    first, second = receiver.hits
    assert first.json() == {
        "text": "hello: deploy #3 (abc1234) is live at http://hello.localhost:8080/"
    }
    assert second.json() == {
        "text": "hello: deploy #4 (0123456) failed: health check: &lt;html&gt; &amp; more"
    }
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["X-Rivetr-Event"] == "deploy.succeeded"
    assert verify(SECRET, first.body, first.headers["X-Rivetr-Signature"])


def test_render_text_for_every_event() -> None:
    f: dict[str, object] = {
        "deployment_id": 3,
        "commit": "abc1234def",
        "reason": "exit 137",
        "url": "http://hello.localhost/",
    }
    assert render_text("deploy.started", "hello", f) == "hello: deploy #3 (abc1234) started"
    assert render_text("deploy.succeeded", "hello", f) == (
        "hello: deploy #3 (abc1234) is live at http://hello.localhost/"
    )
    assert render_text("deploy.failed", "hello", f) == (
        "hello: deploy #3 (abc1234) failed: exit 137"
    )
    assert render_text("deploy.rolled_back", "hello", f) == (
        "hello: rolled back to deploy #3 (abc1234): exit 137"
    )
    assert render_text("container.crashed", "hello", f) == (
        "hello: container of deploy #3 (abc1234) crashed: exit 137"
    )
    # Missing fields are left out, not rendered as None.
    assert render_text("deploy.failed", "hello", {}) == "hello: deploy failed"
    assert render_text("deploy.succeeded", "hello", {"commit": "abcdef0123"}) == (
        "hello: deploy (abcdef0) is live"
    )
    with pytest.raises(ValueError):
        render_text("deploy.exploded", "hello", f)


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "attempts"),
    [
        ([500, 500, 200], 3),
        ([429, 503, 200], 3),
        ([400], 1),
        ([404], 1),
        ([302], 1),  # redirects are not followed: the signature was meant for this URL
        ([500] * 10, 5),  # gives up after 5
    ],
)
async def test_retries(
    receiver: Receiver,
    make_notifier: Callable[..., Notifier],
    statuses: list[int],
    attempts: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.script["/hook"] = list(statuses)
    notifier = make_notifier(
        Settings(webhook_url=receiver.url("/hook?token=tok-abc"), webhook_secret=SECRET)
    )
    notifier.notify("deploy.started", _app(), deployment_id=1)
    with caplog.at_level(logging.WARNING, logger="rivetr_git.notify"):
        await notifier.drain()
    hits = receiver.at("/hook")
    assert len(hits) == attempts
    assert len({h.body for h in hits}) == 1  # every retry is the same delivery
    assert len({h.headers["X-Rivetr-Delivery"] for h in hits}) == 1
    # Only the notifier's own records: a warning from elsewhere in the process (another
    # test's leftovers) may land in caplog too.
    records = [r for r in caplog.records if r.name.startswith("rivetr_git.notify")]
    if statuses[attempts - 1] == 200:
        assert records == []
    else:
        [record] = records
        assert f"HTTP {statuses[attempts - 1]}" in record.getMessage()
        assert f"after {attempts} attempt" in record.getMessage()
    # Neither the secret, the signature nor the URL's token is ever logged.
    signature = hits[0].headers["X-Rivetr-Signature"]
    assert SECRET not in caplog.text
    assert signature.removeprefix("sha256=")[:16] not in caplog.text
    assert "tok-abc" not in caplog.text


async def test_backoff_doubles(receiver: Receiver, make_notifier: Callable[..., Notifier]) -> None:
    receiver.script["/hook"] = [500, 500, 500, 200]
    notifier = make_notifier(Settings(webhook_url=receiver.url("/hook")), retry_delay=0.05)
    started = time.monotonic()
    notifier.notify("deploy.started", _app())
    await notifier.drain()
    assert len(receiver.hits) == 4
    assert time.monotonic() - started >= 0.05 + 0.1 + 0.2


async def test_a_timeout_is_retried(
    receiver: Receiver, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier(Settings(webhook_url=receiver.url("/slow")), timeout=0.2, attempts=2)
    notifier.notify("deploy.started", _app())
    await asyncio.wait_for(notifier.drain(), 3)
    assert len(receiver.at("/slow")) == 2


# --- never blocks, never raises ---------------------------------------------------------------


async def test_unreachable_and_hanging_receivers_never_block(
    receiver: Receiver, make_notifier: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/hook"
    notifier = make_notifier(Settings(webhook_url=receiver.url("/slow")))

    started = time.perf_counter()
    notifier.notify("deploy.started", _app(dead), deployment_id=1)
    notifier.notify("deploy.succeeded", _app(dead), deployment_id=1)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05

    await asyncio.wait_for(receiver.arrived.wait(), 5)  # the slow receiver holds a request
    with caplog.at_level(logging.WARNING, logger="rivetr_git.notify"):
        await _until(lambda: len(caplog.records) == 2)  # both dead deliveries gave up
    assert all("cannot connect" in r.getMessage() for r in caplog.records)
    assert all("after 5 attempt" in r.getMessage() for r in caplog.records)

    started = time.perf_counter()
    notifier.notify("deploy.failed", _app(dead), deployment_id=2, reason="boom")
    assert time.perf_counter() - started < 0.05

    started = time.perf_counter()
    await notifier.close()  # cancels the hanging deliveries
    assert time.perf_counter() - started < 1
    notifier.notify("deploy.started", _app())  # after close: dropped, no error
    await notifier.drain()


async def test_an_invalid_app_url_is_not_retried(
    make_notifier: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    notifier = make_notifier(Settings())
    with caplog.at_level(logging.WARNING, logger="rivetr_git.notify"):
        notifier.notify("deploy.started", _app("http://[::1"))
        notifier.notify("deploy.started", _app("ftp://example.invalid/x"))
        await notifier.drain()
    assert [r.getMessage().endswith("not sent: invalid URL") for r in caplog.records] == [
        True,
        True,
    ]


def test_notify_without_a_running_loop_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(Settings(webhook_url="http://127.0.0.1:9/hook"))
    with caplog.at_level(logging.WARNING, logger="rivetr_git.notify"):
        notifier.notify("deploy.started", _app())
    assert "not sent" in caplog.text


# --- programming errors -----------------------------------------------------------------------


def test_unknown_events_and_reserved_fields_raise() -> None:
    notifier = Notifier(Settings(webhook_url="http://127.0.0.1:9/hook"))
    with pytest.raises(ValueError, match="unknown event"):
        notifier.notify("deploy.exploded", _app())
    with pytest.raises(ValueError, match="unknown event"):
        notifier.notify("deploy.succeeded ", _app())
    with pytest.raises(ValueError, match="overwrite"):
        notifier.notify("deploy.started", _app(), id=1)
    assert {
        "deploy.started",
        "deploy.succeeded",
        "deploy.failed",
        "deploy.rolled_back",
        "container.crashed",
        "app.unhealthy",
        "cert.renewed",
        "cert.failed",
    } == EVENTS


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Notifier(Settings(), attempts=0)
