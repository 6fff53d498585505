"""HTTPS in the data planes: SNI, fallback, protocol floor, ALPN, resumption, handshake
deadline, X-Forwarded-Proto, WebSockets over TLS, challenges, 308 redirects and HSTS.

Real proxies (in-process, worker processes, nginx) in front of a real aiohttp upstream;
real TLS handshakes with Python's ssl module; certificates published through the same
state dir the daemon writes (proxy/tls/files.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.routes import Upstream
from rivetr_git.proxy.tls import files
from rivetr_git.proxy.tls.pem import self_signed
from tests.proxy_env import Env, headers_of, raw_request, start_env

TLS_BACKENDS = ("builtin", "workers", "nginx")


class TlsEnv:
    def __init__(self, env: Env, tls_dir: Path, certs: dict[str, bytes]) -> None:
        self.env = env
        self.tls_dir = tls_dir
        self.certs = certs  # host -> its certificate PEM (a CA for itself)

    @property
    def port(self) -> int:
        return int(self.env.proxy.https_port)

    async def publish(self, entries: list[files.AppCert]) -> None:
        files.publish(self.tls_dir, entries)
        self.env.proxy.reload_tls()
        assert await self.env.proxy.wait_synced(10)


def _cert(host: str) -> tuple[bytes, bytes]:
    return self_signed([host])


@contextlib.asynccontextmanager
async def tls_env(tmp_path: Path, backend: str, **config: object) -> AsyncIterator[TlsEnv]:
    tls_dir = tmp_path / "tls"
    cfg = ProxyConfig(tls_dir=tls_dir, **config)  # type: ignore[arg-type]
    workers = 2 if backend == "workers" else 0
    async with start_env(
        cfg, backend="nginx" if backend == "nginx" else "builtin", workers=workers
    ) as env:
        env.routes.set(
            Upstream(app="other", host="127.0.0.1", port=env.upstream_port, deployment_id=2)
        )
        assert await env.proxy.wait_synced(10)
        certs = {}
        entries = []
        for app in ("web", "other"):
            cert, key = _cert(f"{app}.localhost")
            certs[f"{app}.localhost"] = cert
            entries.append(
                files.AppCert(
                    app,
                    cert,
                    key,
                    (f"{app}.localhost",),
                    redirect=app == "web",
                    hsts=3600 if app == "web" else 0,
                )
            )
        t = TlsEnv(env, tls_dir, certs)
        await t.publish(entries)
        yield t


@pytest.fixture(params=TLS_BACKENDS)
async def tls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TlsEnv]:
    async with tls_env(tmp_path, request.param, header_timeout=2.0) as t:
        yield t


def _client(cafile: bytes | None = None, **kw: object) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=cafile.decode())
    for name, value in kw.items():
        setattr(context, name, value)
    return context


def _handshake(
    port: int, context: ssl.SSLContext, sni: str | None, session: ssl.SSLSession | None = None
) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=sni, session=session)


def _get(conn: ssl.SSLSocket, host: str, path: str = "/") -> bytes:
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def _peer_names(conn: ssl.SSLSocket) -> list[str]:
    cert = conn.getpeercert()
    assert cert
    alt: tuple[tuple[str, str], ...] = cert.get("subjectAltName", ())  # type: ignore[assignment]
    return [value for kind, value in alt if kind == "DNS"]


async def test_sni_picks_each_apps_certificate_and_the_request_is_forwarded_as_https(
    tls: TlsEnv,
) -> None:
    for host in ("web.localhost", "other.localhost"):

        def fetch(host: str = host) -> tuple[list[str], bytes, str | None]:
            with _handshake(tls.port, _client(tls.certs[host]), host) as conn:
                return _peer_names(conn), _get(conn, host, "/echo"), conn.selected_alpn_protocol()

        names, answer, _ = await asyncio.to_thread(fetch)
        assert names == [host]
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    seen = headers_of(tls.env.seen.requests[-1])
    assert seen["X-Forwarded-Proto"] == "https"
    assert seen["Host"] == "other.localhost"


async def test_alpn_offers_http11(tls: TlsEnv) -> None:
    context = _client(tls.certs["web.localhost"])
    context.set_alpn_protocols(["h2", "http/1.1"])

    def alpn() -> str | None:
        with _handshake(tls.port, context, "web.localhost") as conn:
            return conn.selected_alpn_protocol()

    assert await asyncio.to_thread(alpn) == "http/1.1"


async def test_no_sni_and_unknown_sni_get_the_fallback_certificate_and_404(tls: TlsEnv) -> None:
    def fetch(sni: str | None, host: str) -> tuple[dict[str, object], bytes]:
        with _handshake(tls.port, _client(), sni) as conn:
            der = conn.getpeercert(binary_form=True)
            assert der is not None
            pem = ssl.DER_cert_to_PEM_cert(der)
            return {"pem": pem}, _get(conn, host)

    for sni, host in ((None, "nobody.localhost"), ("nobody.localhost", "nobody.localhost")):
        info, answer = await asyncio.to_thread(fetch, sni, host)
        assert "web.localhost" not in str(info)
        assert answer.startswith(b"HTTP/1.1 404"), answer[:100]
        assert b"No app is served at this address." in answer or tls.env.backend == "nginx"
    # The fallback is not any app's certificate: verification against the apps' fails.
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(
            _handshake, tls.port, _client(tls.certs["web.localhost"]), "nobody.localhost"
        )


async def test_tls_below_1_2_is_refused(tls: TlsEnv) -> None:
    old = _client()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")  # so that this client may offer TLS 1.1 at all
    with pytest.raises(ssl.SSLError) as refused:
        await asyncio.to_thread(_handshake, tls.port, old, "web.localhost")
    # The server refused (an alert, or a close), not the client refusing to try.
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)
    new = _client(tls.certs["web.localhost"], maximum_version=ssl.TLSVersion.TLSv1_2)

    def version() -> str | None:
        with _handshake(tls.port, new, "web.localhost") as conn:
            return conn.version()

    assert await asyncio.to_thread(version) == "TLSv1.2"


async def test_sessions_resume(tls: TlsEnv) -> None:
    context = _client(tls.certs["web.localhost"], maximum_version=ssl.TLSVersion.TLSv1_2)

    def resumed() -> bool:
        with _handshake(tls.port, context, "web.localhost") as first:
            _get(first, "web.localhost")
            session = first.session
        reused = []
        # Each worker process has its own ticket keys and the kernel spreads connections
        # between workers: 12 tries make 2 workers miss the first one 1 time in 4,096.
        for _ in range(12):
            with _handshake(tls.port, context, "web.localhost", session) as again:
                reused.append(again.session_reused)
        return any(reused)

    assert await asyncio.to_thread(resumed)


async def test_a_handshake_that_never_finishes_is_cut(tls: TlsEnv) -> None:
    hello_start = bytes.fromhex("16030100c8010000c40303")  # a ClientHello, cut short

    def wait_closed() -> float:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", tls.port), timeout=30) as raw:
            raw.sendall(hello_start)
            while raw.recv(4096):
                pass
        return time.monotonic() - started

    assert await asyncio.to_thread(wait_closed) < 20


async def test_plain_http_to_the_https_port_gets_no_answer_from_an_app(tls: TlsEnv) -> None:
    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
            data = b""
            with contextlib.suppress(ConnectionError):
                while chunk := raw.recv(4096):
                    data += chunk
            return data

    answer = await asyncio.to_thread(send)
    assert not answer.startswith(b"HTTP/1.1 200")
    assert not tls.env.seen.requests


async def test_websocket_over_tls(tls: TlsEnv) -> None:
    context = _client(tls.certs["web.localhost"])
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"wss://127.0.0.1:{tls.port}/ws",
            ssl=context,
            server_hostname="web.localhost",
            headers={"Host": "web.localhost"},
        ) as ws,
    ):
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "echo:hello"
        await ws.send_str("headers?")
        seen = dict(await ws.receive_json(timeout=5))
    assert seen["X-Forwarded-Proto"] == "https"


async def test_plain_http_is_redirected_once_a_certificate_covers_the_host(tls: TlsEnv) -> None:
    port = tls.env.proxy_port
    answer = await raw_request(
        port, b"GET /a/b?c=d HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n"
    )
    assert answer.status == 308
    assert answer.get("Location") == f"https://web.localhost:{tls.port}/a/b?c=d"
    # redirect=False for 'other': served over plain HTTP as before.
    answer = await raw_request(
        port, b"GET / HTTP/1.1\r\nHost: other.localhost\r\nConnection: close\r\n\r\n"
    )
    assert answer.status == 200


async def test_acme_challenges_are_answered_on_plain_http_and_exempt_from_redirects(
    tls: TlsEnv,
) -> None:
    files.put_challenge(tls.tls_dir, "tok-EN_1", "tok-EN_1.thumbprint")
    port = tls.env.proxy_port
    answer = await raw_request(
        port,
        b"GET /.well-known/acme-challenge/tok-EN_1 HTTP/1.1\r\n"
        b"Host: web.localhost\r\nConnection: close\r\n\r\n",
    )
    assert (answer.status, answer.body) == (200, b"tok-EN_1.thumbprint")
    answer = await raw_request(
        port,
        b"GET /.well-known/acme-challenge/missing HTTP/1.1\r\n"
        b"Host: web.localhost\r\nConnection: close\r\n\r\n",
    )
    assert answer.status == 404
    files.drop_challenge(tls.tls_dir, "tok-EN_1")
    answer = await raw_request(
        port,
        b"GET /.well-known/acme-challenge/tok-EN_1 HTTP/1.1\r\n"
        b"Host: web.localhost\r\nConnection: close\r\n\r\n",
    )
    assert answer.status == 404


async def test_hsts_is_sent_over_https_only_where_set(tls: TlsEnv) -> None:
    def head(host: str) -> bytes:
        with _handshake(tls.port, _client(tls.certs[host]), host) as conn:
            return _get(conn, host, "/x").split(b"\r\n\r\n")[0]

    assert b"Strict-Transport-Security: max-age=3600" in await asyncio.to_thread(
        head, "web.localhost"
    )
    assert b"Strict-Transport-Security" not in await asyncio.to_thread(head, "other.localhost")


async def test_a_new_certificate_replaces_the_old_one_without_a_restart(tls: TlsEnv) -> None:
    cert, key = _cert("web.localhost")
    await tls.publish([files.AppCert("web", cert, key, ("web.localhost",))])

    def names_with(ca: bytes) -> list[str]:
        with _handshake(tls.port, _client(ca), "web.localhost") as conn:
            return _peer_names(conn)

    assert await asyncio.to_thread(names_with, cert) == ["web.localhost"]
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(names_with, tls.certs["web.localhost"])
    # 'other' was left out of this index: no redirect, and over HTTPS the fallback and the
    # 404 page, although it is routed (a name without a certificate is not served there).
    answer = await raw_request(
        tls.env.proxy_port, b"GET / HTTP/1.1\r\nHost: other.localhost\r\nConnection: close\r\n\r\n"
    )
    assert answer.status == 200

    def other_over_tls() -> bytes:
        with _handshake(tls.port, _client(), "other.localhost") as conn:
            return _get(conn, "other.localhost")

    assert (await asyncio.to_thread(other_over_tls)).startswith(b"HTTP/1.1 404")


def test_state_files_are_private(tmp_path: Path) -> None:
    cert, key = _cert("web.localhost")
    files.publish(tmp_path, [files.AppCert("web", cert, key, ("web.localhost",))])
    for path in (tmp_path / "certs" / "web.pem", tmp_path / files.FALLBACK, tmp_path / files.INDEX):
        assert path.stat().st_mode & 0o077 == 0, path
    assert (tmp_path / "certs").stat().st_mode & 0o077 == 0
