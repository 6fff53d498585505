"""The SSH listener's door: OpenSSH-style MaxStartups caps and per-address handshake throttling.

Every TCP connection passes the gate before asyncssh sees it. A connection over a cap is
closed at once, before the version exchange, so it costs one accept and one close: no key
exchange, no asyncssh objects, no log lines of its own (refusals are summed up in one line
per interval). A connection over its address's handshake rate is not refused but held
(its first bytes buffered, nothing sent) until the address has a token again: the
expensive Diffie-Hellman work (the DHEat attack, CVE-2002-20001) happens at most at that
rate per address, while a burst of pushes from one CI runner is served a little later
instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# What OpenSSH sends when MaxStartups refuses; ssh-audit and people reading a trace know it.
_REFUSED = b"Exceeded MaxStartups\r\n"
# What a waiting client may send before its turn: its version line and KEXINIT (~2 KB).
_EARLY_LIMIT = 16 * 1024


@dataclass(frozen=True)
class GateLimits:
    max_startups: int  # unauthenticated connections at once, from everyone
    max_startups_per_source: int  # ... from one address
    handshake_rate: float  # new handshakes per second per address (0: no throttling)
    handshake_burst: int  # handshakes an address may start at once before the rate applies
    log_interval: float = 10.0  # seconds between summary lines about refusals


class RefusalLog:
    """Counts refused connections and writes one summary line per interval, not one per
    connection: a flood must not fill the disk with logs."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._counts: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None

    def refused(self, reason: str, source: str) -> None:
        first = not self._counts and self._flush is None
        self._counts[reason] += 1
        self._sources[source] += 1
        if first:
            # The first refusal after a quiet spell is logged at once; the rest are summed.
            self.flush()
            self._flush = asyncio.get_running_loop().call_later(self._interval, self._tick)

    def _tick(self) -> None:
        self._flush = None
        if self._counts:
            self.flush()
            self._flush = asyncio.get_running_loop().call_later(self._interval, self._tick)

    def flush(self) -> None:
        if not self._counts:
            return
        reasons = ", ".join(f"{n} {reason}" for reason, n in self._counts.most_common())
        top, n = self._sources.most_common(1)[0]
        log.warning(
            "refused %d SSH connection(s) (%s); most from %s (%d)",
            sum(self._counts.values()),
            reasons,
            top,
            n,
        )
        self._counts.clear()
        self._sources.clear()

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self.flush()


class _Bucket:
    """A token bucket: `burst` handshakes at once, then `rate` per second."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = now

    def take(self, now: float) -> float:
        """Take a token (possibly one not there yet); return how long to wait for it."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def give_back(self) -> None:
        self.tokens = min(self.burst, self.tokens + 1)

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.at) * self.rate >= self.burst


class ConnectionGate:
    """Who may start a handshake now. Connections stay counted as unauthenticated from
    accept until `authenticated()` or `closed()`."""

    def __init__(self, limits: GateLimits) -> None:
        self.limits = limits
        self.refusals = RefusalLog(limits.log_interval)
        self._pending: Counter[str] = Counter()
        self._buckets: dict[str, _Bucket] = {}
        self._clock: Callable[[], float] = time.monotonic

    @property
    def pending(self) -> int:
        return self._pending.total()

    def admit(self, source: str) -> float | None:
        """None: refuse now. Else the seconds to wait before the handshake may start."""
        lim = self.limits
        if self.pending >= lim.max_startups:
            self.refusals.refused("over ssh_max_startups", source)
            return None
        if self._pending[source] >= lim.max_startups_per_source:
            self.refusals.refused("over ssh_max_startups_per_source", source)
            return None
        self._pending[source] += 1
        if lim.handshake_rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) > 4 * lim.max_startups:
                self._forget_full(now)
            bucket = self._buckets[source] = _Bucket(lim.handshake_rate, lim.handshake_burst, now)
        return bucket.take(now)

    def authenticated(self, source: str) -> None:
        self._release(source)

    def closed(self, source: str, before_start: bool = False) -> None:
        """The connection is gone; `before_start`: while it still waited for its token,
        which goes back (else an address that reconnects would owe ever more time)."""
        self._release(source)
        bucket = self._buckets.get(source)
        if before_start and bucket is not None:
            bucket.give_back()

    def _release(self, source: str) -> None:
        if self._pending[source] > 1:
            self._pending[source] -= 1
        else:
            self._pending.pop(source, None)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they say nothing a new one would not."""
        for source in [s for s, b in self._buckets.items() if b.full(now)]:
            del self._buckets[source]


class GatedProtocol(asyncio.Protocol):
    """Stands in front of one asyncssh connection; creates it only once the gate admits."""

    def __init__(
        self, gate: ConnectionGate, make_conn: Callable[[GatedProtocol], asyncio.Protocol]
    ) -> None:
        self._gate = gate
        self._make_conn = make_conn
        self._conn: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._source = ""
        self._counted = False
        self._wait: asyncio.TimerHandle | None = None
        self._early = bytearray()

    @property
    def source(self) -> str:
        return self._source

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._source = str(peer[0]) if peer else "local"
        delay = self._gate.admit(self._source)
        if delay is None:
            with contextlib.suppress(OSError):
                transport.write(_REFUSED)
            transport.close()
            return
        self._counted = True
        if delay <= 0:
            self._start()
            return
        # Keep reading while waiting (into a small buffer), so a client that leaves is
        # noticed at once and its slot and token come back.
        self._wait = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._wait = None
        assert self._transport is not None
        if self._transport.is_closing():
            return
        self._conn = self._make_conn(self)
        self._conn.connection_made(self._transport)
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self._conn.data_received(early)

    def authenticated(self) -> None:
        """Called by the SSH server once auth completed: no longer a 'startup'."""
        if self._counted:
            self._counted = False
            self._gate.authenticated(self._source)

    def data_received(self, data: bytes) -> None:
        if self._conn is not None:
            self._conn.data_received(data)
            return
        self._early += data
        if len(self._early) > _EARLY_LIMIT and self._transport is not None:
            self._transport.close()  # no SSH client says this much before the server

    def eof_received(self) -> bool | None:
        return self._conn.eof_received() if self._conn is not None else None  # None: close

    def pause_writing(self) -> None:
        if self._conn is not None:
            self._conn.pause_writing()

    def resume_writing(self) -> None:
        if self._conn is not None:
            self._conn.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        waiting = self._wait is not None
        if self._wait is not None:
            self._wait.cancel()
            self._wait = None
        if self._counted:
            self._counted = False
            self._gate.closed(self._source, before_start=waiting)
        if self._conn is not None:
            self._conn.connection_lost(exc)


def gated_factory(
    gate: ConnectionGate, make_conn: Callable[[GatedProtocol], Any]
) -> Callable[[], GatedProtocol]:
    """A protocol factory for loop.create_server; `make_conn(gated)` makes the SSH side."""
    return lambda: GatedProtocol(gate, make_conn)
