"""Header rules of a proxy, on raw bytes: hop-by-hop stripping and the X-Forwarded-* family."""

from __future__ import annotations

import ipaddress
import itertools
import secrets
from collections.abc import Iterable

from rivetr_git.validate import Network

# One request or response header: (lower-cased name, name as sent, value).
Header = tuple[bytes, bytes, bytes]

# RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard ones proxies also drop.
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    )
)
# Set by the proxy itself; a client's own values are only believed from a trusted proxy.
FORWARDING = frozenset(
    (
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-real-ip",
        b"forwarded",
        b"x-request-id",
    )
)
# Expect is answered by the proxy (it sends 100 Continue itself), never passed on.
_UNTRUSTED_DROP = HOP_BY_HOP | FORWARDING | {b"expect"}
_TRUSTED_DROP = HOP_BY_HOP | {b"expect", b"x-forwarded-for", b"x-real-ip"}


def connection_tokens(headers: Iterable[Header]) -> set[bytes]:
    """Header names listed in Connection: hop-by-hop too (RFC 9110 §7.6.1)."""
    return {
        token.strip().lower()
        for low, _, value in headers
        if low == b"connection"
        for token in value.split(b",")
    }


def header_lines(headers: Iterable[Header], drop: frozenset[bytes] | set[bytes]) -> list[bytes]:
    return [name + b": " + value + b"\r\n" for low, name, value in headers if low not in drop]


def end_to_end_lines(headers: list[Header]) -> list[bytes]:
    """A response's headers without hop-by-hop ones and those named in its Connection."""
    named = connection_tokens(headers)
    return header_lines(headers, HOP_BY_HOP | named if named else HOP_BY_HOP)


def _is_trusted(address: str, trusted: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in trusted)


class Forwarding:
    """Builds the header lines an app gets, given who connected and what they sent."""

    def __init__(self, trusted_proxies: tuple[Network, ...]) -> None:
        self._trusted = trusted_proxies
        # Request IDs: unique, cheap (no syscall per request), not secret.
        self._id_prefix = secrets.token_hex(8)
        self._ids = itertools.count()

    def request_id(self) -> bytes:
        return f"{self._id_prefix}{next(self._ids):016x}".encode()

    def lines(self, headers: list[Header], peer: str, scheme: bytes, host: bytes) -> list[bytes]:
        """Every header line for the app: end-to-end ones plus the forwarding family."""
        named = connection_tokens(headers)
        if not self._trusted or not _is_trusted(peer, self._trusted):
            out = header_lines(headers, _UNTRUSTED_DROP | named if named else _UNTRUSTED_DROP)
            ip = peer.encode()
            out.append(
                b"X-Forwarded-For: %s\r\nX-Real-IP: %s\r\nX-Forwarded-Proto: %s\r\n"
                b"X-Forwarded-Host: %s\r\nX-Request-ID: %s\r\n"
                % (ip, ip, scheme, host, self.request_id())
            )
            return out
        # A trusted proxy in front: append to its chain, keep what it says about the client.
        out = header_lines(headers, _TRUSTED_DROP | named)
        chain = [
            a.strip().decode("latin-1")
            for low, _, v in headers
            if low == b"x-forwarded-for"
            for a in v.split(b",")
            if a.strip()
        ]
        real = next((a for a in reversed(chain) if not _is_trusted(a, self._trusted)), peer)
        out.append(
            b"X-Forwarded-For: %s\r\nX-Real-IP: %s\r\n"
            % (", ".join([*chain, peer]).encode("latin-1"), real.encode("latin-1"))
        )
        present = {low for low, _, _ in headers}
        if b"x-forwarded-proto" not in present:
            out.append(b"X-Forwarded-Proto: %s\r\n" % scheme)
        if b"x-forwarded-host" not in present:
            out.append(b"X-Forwarded-Host: %s\r\n" % host)
        if b"x-request-id" not in present:
            out.append(b"X-Request-ID: %s\r\n" % self.request_id())
        return out
