"""Automatic certificates against a real ACME server (pebble): issuance for an app and its
custom domain, the chain checked against pebble's root, domains:add without losing HTTPS,
the redirect with the challenge path exempt, restarts that order nothing, renewal of a
certificate that expires soon, and a stopped ACME server leaving the current one serving.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import running_server
from tests.helpers import AppRepo, Key, Server, wait_until
from tests.pebble import Pebble
from tests.test_https_certs import _http_status
from tests.tls_helpers import fails, free_port, https_get, ok, same_cert, served_cert


class Hooks:
    """A webhook receiver on loopback that keeps every event it gets."""

    def __init__(self) -> None:
        events: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.events = events
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    yield receiver
    receiver.http.shutdown()


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    server = Pebble(tmp_path / "pebble")
    yield server
    server.stop()


@pytest.fixture
def acme_server(
    docker_engine: None,
    tmp_path: Path,
    keys: dict[str, Key],
    pebble: Pebble,
    hooks: Hooks,
    request: pytest.FixtureRequest,
) -> Iterator[Server]:
    proxy_port = free_port()  # fixed, so pebble validates against it across restarts
    pebble.start(proxy_port)
    yield from running_server(
        tmp_path / "data",
        keys,
        env={
            "RIVETR_PROXY_BACKEND": getattr(request, "param", "builtin"),
            "RIVETR_PROXY_PORT": str(proxy_port),
            "RIVETR_HTTPS_PORT": str(free_port()),
            "RIVETR_ACME_DIRECTORY": pebble.directory,
            "RIVETR_ACME_CA_BUNDLE": str(pebble.ca_file),
            "RIVETR_ACME_EMAIL": "ops@tl.test",
            "RIVETR_WEBHOOK_URL": hooks.url,
        },
    )


def _issued_at(server: Server, app: str) -> str:
    with sqlite3.connect(server.data_dir / "rivetr.db") as db:
        (issued,) = db.execute(
            "SELECT t.issued_at FROM app_tls t JOIN apps a ON a.id = t.app_id WHERE a.name = ?",
            (app,),
        ).fetchone()
    return str(issued)


def _expire_soon(server: Server, app: str) -> None:
    """Make the stored certificate look 10 days from expiry (pebble issues for years)."""
    soon = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=10)).isoformat()
    with sqlite3.connect(server.data_dir / "rivetr.db") as db:
        db.execute(
            "UPDATE app_tls SET not_after = ? WHERE app_id = (SELECT id FROM apps WHERE name = ?)",
            (soon, app),
        )


@pytest.mark.parametrize("acme_server", ["builtin", "nginx"], indirect=True)
def test_issuance_custom_domain_redirect_and_restart(
    acme_server: Server, pebble: Pebble, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv, alice = acme_server, keys["alice"]
    repo = AppRepo(tmp_path / "repo", alice)
    assert repo.push(srv.remote("tl-acme")).returncode == 0
    ok(srv, alice, "domains:add", "tl-acme", "www.tl-acme.test")
    out = ok(srv, alice, "certs:auto:enable", "tl-acme")
    assert "renewed automatically" in out
    root = pebble.root_pem()
    # The served chain verifies against pebble's root, for both names, and routes by Host.
    for host in ("tl-acme.localhost", "www.tl-acme.test"):
        answer = https_get(srv.https_port, host, root)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello v1\n")
    listing = ok(srv, alice, "certs", "tl-acme")
    assert "automatic" in listing and "Pebble" in listing and "automatic: on" in listing

    # Plain HTTP is redirected now, except the challenge path.
    assert _http_status(srv, "tl-acme.localhost")[0] == 308
    assert _http_status(srv, "tl-acme.localhost", "/.well-known/acme-challenge/nope")[0] == 404

    # A new domain gets a new certificate; HTTPS stays up meanwhile for the old names.
    first = served_cert(srv.https_port, "tl-acme.localhost")
    failures: list[bytes] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            answer = https_get(srv.https_port, "tl-acme.localhost", root)
            if not answer.startswith(b"HTTP/1.1 200"):
                failures.append(answer[:100])

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        out = ok(srv, alice, "domains:add", "tl-acme", "api.tl-acme.test")
    finally:
        stop.set()
        asker.join()
    assert "new certificate is in service" in out
    assert failures == []
    assert not same_cert(served_cert(srv.https_port, "tl-acme.localhost"), first)
    assert https_get(srv.https_port, "api.tl-acme.test", root).startswith(b"HTTP/1.1 200")

    # A restart serves the same certificate and orders nothing.
    current = served_cert(srv.https_port, "tl-acme.localhost")
    issued = _issued_at(srv, "tl-acme")
    srv.stop()
    srv.start()
    assert same_cert(served_cert(srv.https_port, "tl-acme.localhost"), current)
    assert _issued_at(srv, "tl-acme") == issued

    ok(srv, alice, "certs:auto:disable", "tl-acme")
    assert "automatic: off" in ok(srv, alice, "certs", "tl-acme")


def test_renewal_events_and_a_failing_acme_server(
    acme_server: Server, pebble: Pebble, keys: dict[str, Key], hooks: Hooks
) -> None:
    srv, alice = acme_server, keys["alice"]
    ok(srv, alice, "apps:create", "tl-ren")
    ok(srv, alice, "certs:auto:enable", "tl-ren")
    first = served_cert(srv.https_port, "tl-ren.localhost")

    # Under 30 days left: the renewal task (its first round runs at start-up) renews.
    srv.stop()
    _expire_soon(srv, "tl-ren")
    srv.start()
    assert wait_until(
        lambda: not same_cert(served_cert(srv.https_port, "tl-ren.localhost"), first), 30
    )
    assert wait_until(lambda: hooks.named("cert.renewed"), 10)
    assert hooks.named("cert.renewed")[0]["app"] == "tl-ren"
    renewed = served_cert(srv.https_port, "tl-ren.localhost")

    # The ACME server goes away: the current certificate keeps serving, the error shows.
    pebble.stop()
    srv.stop()
    _expire_soon(srv, "tl-ren")
    srv.start()
    assert wait_until(lambda: hooks.named("cert.failed"), 30)
    assert "cannot talk to the ACME server" in hooks.named("cert.failed")[0]["reason"]
    listing = ok(srv, alice, "certs", "tl-ren")
    assert "last renewal error" in listing and "cannot talk to the ACME server" in listing
    assert same_cert(served_cert(srv.https_port, "tl-ren.localhost"), renewed)
    assert https_get(srv.https_port, "tl-ren.localhost", None).startswith(b"HTTP/1.1 404")
    # An order asked for now fails the same way and says so.
    assert "cannot talk to the ACME server" in fails(srv, alice, "certs:auto:enable", "tl-ren")
