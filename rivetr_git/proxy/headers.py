"""Header rules of a proxy: hop-by-hop stripping and the X-Forwarded-* family."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from rivetr_git.proxy.config import Network

# RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard ones proxies also drop.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
        "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    )
)
HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)
# Set by the proxy itself; a client's own values are only believed from a trusted proxy.
FORWARDING = frozenset(
    ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded",
     "x-request-id")
)
# Expect is answered by the proxy (it sends 100 Continue itself), never passed on.
_REQUEST_ONLY = frozenset(("expect",))
NO_DROP: frozenset[str] = frozenset()


def end_to_end(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    """Copy headers, leaving out hop-by-hop ones, `drop`, and any header named in Connection."""
    connection = headers.getall("Connection", ())
    named = {t.strip().lower() for v in connection for t in v.split(",")} if connection else ()
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low in HOP_BY_HOP or low in drop or low in named:
            continue
        out.add(name, value)
    return out


def _is_trusted(address: str, trusted: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in trusted)


class Forwarding:
    """Builds the headers an upstream gets, given who connected and what they sent."""

    def __init__(self, trusted_proxies: tuple[Network, ...]) -> None:
        self._trusted = trusted_proxies
        self._request_drop = FORWARDING | _REQUEST_ONLY
        self._trusted_drop = _REQUEST_ONLY

    def request_headers(
        self, headers: CIMultiDictProxy[str], peer: str, scheme: str
    ) -> CIMultiDict[str]:
        if not self._trusted or not _is_trusted(peer, self._trusted):
            out = end_to_end(headers, self._request_drop)
            out["X-Forwarded-For"] = peer
            out["X-Real-IP"] = peer
            out["X-Forwarded-Proto"] = scheme
            out["X-Forwarded-Host"] = headers.get("Host", "")
            out["X-Request-ID"] = secrets.token_hex(16)
            return out
        # A trusted proxy in front: append to its chain, keep what it says about the client.
        out = end_to_end(headers, self._trusted_drop)
        chain = [a.strip() for v in headers.getall("X-Forwarded-For", ()) for a in v.split(",")]
        chain = [a for a in chain if a]
        out["X-Forwarded-For"] = ", ".join([*chain, peer])
        # The client is the last address in the chain that is not one of our proxies.
        real = next((a for a in reversed(chain) if not _is_trusted(a, self._trusted)), peer)
        out["X-Real-IP"] = real
        out.setdefault("X-Forwarded-Proto", scheme)
        out.setdefault("X-Forwarded-Host", headers.get("Host", ""))
        out.setdefault("X-Request-ID", secrets.token_hex(16))
        return out
