"""Uploaded certificates end to end: `certs:add` over real SSH, real TLS handshakes through
the daemon's proxy, SNI choosing between two apps, redirects and HSTS, refused bundles,
keys encrypted at rest and covered by `secrets rotate`."""

from __future__ import annotations

import sqlite3
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.helpers import AppRepo, Key, Server
from tests.tls_helpers import (
    expired_cert,
    fails,
    free_port,
    https_get,
    ok,
    openssl_cert,
    same_cert,
    served_cert,
)


@pytest.fixture
def tls_server(
    docker_engine: None, tmp_path: Path, keys: dict[str, Key], request: pytest.FixtureRequest
) -> Iterator[Server]:
    backend = getattr(request, "param", "builtin")
    yield from running_server(
        tmp_path / "data",
        keys,
        with_bob=True,
        env={"RIVETR_HTTPS_PORT": str(free_port()), "RIVETR_PROXY_BACKEND": backend},
    )


def _http_status(server: Server, host: str, path: str = "/") -> tuple[int, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kw: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.proxy_port}{path}", headers={"Host": host}
    )
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers.get("Location") or ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location") or ""


@pytest.mark.parametrize("tls_server", ["builtin", "nginx"], indirect=True)
def test_uploaded_certificates_sni_redirect_hsts_and_removal(
    tls_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv, alice = tls_server, keys["alice"]
    assert srv.https_port
    repo = AppRepo(tmp_path / "repo", alice)
    assert repo.push(srv.remote("tl-a")).returncode == 0
    ok(srv, alice, "apps:create", "tl-b")
    cert_a, key_a = openssl_cert(tmp_path / "pki", "a", "tl-a.localhost")
    cert_b, key_b = openssl_cert(tmp_path / "pki", "b", "tl-b.localhost", "www.tl-b.test")
    # Before any upload: the fallback, and plain HTTP is served as before.
    assert not same_cert(served_cert(srv.https_port, "tl-a.localhost"), cert_a)
    assert _http_status(srv, "tl-a.localhost")[0] == 200

    out = ok(srv, alice, "certs:add", "tl-a", stdin=cert_a + key_a)
    assert "tl-a.localhost" in out and "valid until" in out
    out = ok(srv, alice, "certs:add", "tl-b", stdin=key_b + cert_b)  # any order in the bundle
    assert "tl-b.localhost" in out

    # SNI picks each app's own certificate; requests route by Host as over HTTP.
    assert same_cert(served_cert(srv.https_port, "tl-a.localhost"), cert_a)
    assert same_cert(served_cert(srv.https_port, "tl-b.localhost"), cert_b)
    answer = https_get(srv.https_port, "tl-a.localhost", cert_a)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello v1\n")
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(srv.https_port, "tl-a.localhost", cert_b)

    listing = ok(srv, alice, "certs", "tl-a")
    assert "tl-a.localhost" in listing and "uploaded" in listing and "redirect: on" in listing
    # The app's URL is https now, in apps:info and in the next deploy's last line.
    assert f"https://tl-a.localhost:{srv.https_port}/" in ok(srv, alice, "apps:info", "tl-a")
    assert f"https://tl-b.localhost:{srv.https_port}/" in ok(srv, alice, "apps:list")
    repo.write("www/extra.txt", "more\n")
    repo.commit("again")
    again = repo.push(srv.remote("tl-a"))
    assert f"Running: https://tl-a.localhost:{srv.https_port}/" in again.stderr, again.stderr
    # A valid certificate turns on the redirect (https_redirect defaults to true).
    status, location = _http_status(srv, "tl-a.localhost", "/x?y=1")
    assert status == 308
    assert location == f"https://tl-a.localhost:{srv.https_port}/x?y=1"

    ok(srv, alice, "certs:set", "tl-a", "redirect=false", "hsts=600")
    assert _http_status(srv, "tl-a.localhost")[0] == 200
    assert b"Strict-Transport-Security: max-age=600" in https_get(
        srv.https_port, "tl-a.localhost", cert_a
    )
    assert "redirect: off; hsts: 600 s" in ok(srv, alice, "certs", "tl-a")
    assert "redirect=" in fails(srv, alice, "certs:set", "tl-a", "redirect=maybe")

    # Someone without access to the app cannot see or touch its certificate.
    assert "does not exist" in fails(srv, keys["bob"], "certs:add", "tl-a", stdin=cert_a + key_a)

    ok(srv, alice, "certs:remove", "tl-a")
    assert not same_cert(served_cert(srv.https_port, "tl-a.localhost"), cert_a)
    assert "has no certificate" in ok(srv, alice, "certs", "tl-a")
    assert same_cert(served_cert(srv.https_port, "tl-b.localhost"), cert_b)
    assert "has no certificate" in fails(srv, alice, "certs:remove", "tl-a")
    ok(srv, alice, "apps:destroy", "tl-b", "--confirm", "tl-b")
    assert not same_cert(served_cert(srv.https_port, "tl-b.localhost"), cert_b)


def test_refused_bundles_say_why_and_change_nothing(
    tls_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv, alice = tls_server, keys["alice"]
    ok(srv, alice, "apps:create", "tl-c")
    cert_c, key_c = openssl_cert(tmp_path / "pki", "c", "tl-c.localhost")
    _, key_other = openssl_cert(tmp_path / "pki", "o", "tl-c.localhost")
    old_cert, old_key = expired_cert("tl-c.localhost")
    elsewhere, elsewhere_key = openssl_cert(tmp_path / "pki", "x", "shop.example.com")
    cases = {
        "does not belong": cert_c + key_other,
        "expired": old_cert + old_key,
        "no PEM certificate": "garbage\n",
        "no private key": cert_c,
        "none of tl-c's hostnames": elsewhere + elsewhere_key,
    }
    for why, bundle in cases.items():
        error = fails(srv, alice, "certs:add", "tl-c", stdin=bundle)
        assert why in error, error
        assert "PRIVATE KEY" not in error and key_c.splitlines()[1] not in error
    assert "has no certificate" in ok(srv, alice, "certs", "tl-c")
    assert not list((srv.data_dir / "tls" / "certs").glob("*.pem"))
    assert "on stdin" in fails(srv, alice, "certs:add", "tl-c")


def test_keys_are_encrypted_at_rest_private_on_disk_and_rotated(
    tls_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv, alice = tls_server, keys["alice"]
    ok(srv, alice, "apps:create", "tl-d")
    cert, key = openssl_cert(tmp_path / "pki", "d", "tl-d.localhost")
    ok(srv, alice, "certs:add", "tl-d", stdin=cert + key)
    secret_line = key.splitlines()[1]
    with sqlite3.connect(srv.data_dir / "rivetr.db") as db:
        (blob,) = db.execute("SELECT key FROM app_tls").fetchone()
    assert b"PRIVATE KEY" not in blob and b"-----" not in blob
    assert secret_line not in srv.log()
    pem = srv.data_dir / "tls" / "certs" / "tl-d.pem"
    assert pem.stat().st_mode & 0o077 == 0
    assert (srv.data_dir / "tls" / "certs").stat().st_mode & 0o077 == 0

    srv.stop()
    srv.cli("secrets", "rotate")
    with sqlite3.connect(srv.data_dir / "rivetr.db") as db:
        (rotated,) = db.execute("SELECT key FROM app_tls").fetchone()
    assert rotated != blob
    pem.unlink()  # the start publishes again, from the database, under the new key
    srv.start()
    assert same_cert(served_cert(srv.https_port, "tl-d.localhost"), cert)


def test_https_redirect_false_keeps_plain_http_unless_an_app_asks(
    docker_engine: None, tmp_path: Path, keys: dict[str, Key]
) -> None:
    alice = keys["alice"]
    for srv in running_server(
        tmp_path / "data",
        keys,
        env={"RIVETR_HTTPS_PORT": str(free_port()), "RIVETR_HTTPS_REDIRECT": "false"},
    ):
        ok(srv, alice, "apps:create", "tl-e")
        cert, key = openssl_cert(tmp_path / "pki", "e", "tl-e.localhost")
        ok(srv, alice, "certs:add", "tl-e", stdin=cert + key)
        assert "redirect: off" in ok(srv, alice, "certs", "tl-e")
        assert _http_status(srv, "tl-e.localhost")[0] == 404  # not deployed: no redirect
        ok(srv, alice, "certs:set", "tl-e", "redirect=true")
        assert _http_status(srv, "tl-e.localhost") == (
            308,
            f"https://tl-e.localhost:{srv.https_port}/",
        )
        ok(srv, alice, "certs:set", "tl-e", "redirect=")  # back to the server's default
        assert _http_status(srv, "tl-e.localhost")[0] == 404
