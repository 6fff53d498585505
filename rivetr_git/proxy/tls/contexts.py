"""The built-in proxy's TLS side: one SSL context per certificate, chosen by SNI.

TLS 1.2 and 1.3 only; for 1.2 only ECDHE key exchange with AES-GCM or ChaCha20 (1.3's
suites are all modern); ALPN offers http/1.1 only (the proxy speaks HTTP/1.1); session
tickets stay on (OpenSSL's default) for resumption. Every context is created from the
same template, so a client that switches contexts by SNI gets the same protocol rules.

A client hello without SNI, or with a name that has no certificate, is answered with the
self-signed fallback, and then the same 404 page as over HTTP. The contexts are rebuilt
from the state dir (proxy/tls/files.py) on `load()`, which the daemon triggers whenever
it publishes; an unchanged file is not parsed again.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from rivetr_git.proxy.routes import normalize_host
from rivetr_git.proxy.tls.files import FALLBACK, HostPolicy, prepare, read_index

log = logging.getLogger(__name__)

CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"
ALPN = ["http/1.1"]


def server_context(pem: Path) -> ssl.SSLContext:
    """A server context with our protocol rules and the certificate (and key) in `pem`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS_TLS12)
    context.set_alpn_protocols(ALPN)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(pem)
    return context


class TlsContexts:
    """Host -> SSL context and policy, as last published to the state dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        prepare(directory)
        self.default = server_context(directory / FALLBACK)
        self.default.sni_callback = self._pick
        self._by_host: dict[str, ssl.SSLContext] = {}
        self._policies: dict[str, HostPolicy] = {}
        self._cache: dict[str, tuple[float, ssl.SSLContext]] = {}

    def load(self) -> None:
        """Read the index and the certificates it names; a broken file keeps the old one."""
        policies = read_index(self.directory)
        by_host: dict[str, ssl.SSLContext] = {}
        cache: dict[str, tuple[float, ssl.SSLContext]] = {}
        for host, policy in policies.items():
            context = self._context(policy.cert, cache)
            if context is not None:
                by_host[host] = context
        self._by_host, self._policies, self._cache = by_host, policies, cache

    def _context(
        self, name: str, cache: dict[str, tuple[float, ssl.SSLContext]]
    ) -> ssl.SSLContext | None:
        if name in cache:
            return cache[name][1]
        path = self.directory / name
        try:
            mtime = path.stat().st_mtime_ns
            old = self._cache.get(name)
            context = old[1] if old and old[0] == mtime else server_context(path)
        except (OSError, ssl.SSLError) as exc:
            log.error(
                "certificate %s cannot be loaded (%s); its hosts keep their old one",
                name,
                type(exc).__name__,
            )
            old = self._cache.get(name)
            return old[1] if old else None
        cache[name] = (mtime, context)
        return context

    def _pick(self, ssl_object: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        if name:
            context = self._by_host.get(name.lower().rstrip("."))
            if context is not None:
                ssl_object.context = context

    def covered(self, host_header: bytes) -> bool:
        """A valid certificate covers the request's Host (port and case ignored)."""
        return normalize_host(host_header.decode("latin-1")) in self._policies

    def policy(self, host: str) -> HostPolicy | None:
        """The host's HTTPS policy when a valid certificate covers it, else None."""
        return self._policies.get(host)
