"""Who gets a client connection: a cap per client address, and shedding under fd pressure.

One client must not be able to take the proxy down by opening connections and sending
nothing (each one is a file descriptor). Three rules, applied as connections arrive:
- a client address holding `max_conns_per_ip` connections gets 429 and its new connection
  is closed at once, while every other address keeps being accepted (trusted proxies are
  exempt: many clients share their address);
- past the high-water mark (just under the open-file limit), the oldest connection that has
  never sent a byte is closed to make room, then the oldest idle keep-alive one; a
  connection that is mid-request is never shed;
- only when nothing can be shed is the new connection refused.
The counts are per proxy process (per worker with proxy_workers > 1). Shedding below the
open-file limit keeps accept() from failing with EMFILE; if it still does (descriptors
taken elsewhere), libuv (uvloop) closes the connections it cannot take and asyncio pauses
accepting for a second: neither loop spins or stops.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Protocol

from rivetr_git.proxy.fdlimit import nofile_limit
from rivetr_git.validate import Network

log = logging.getLogger(__name__)

_SHED_BATCH = 16  # shed a few at once so a flood does not pay one scan per connection
_LOG_EVERY = 10.0  # seconds between log lines about refused or shed connections


class Connection(Protocol):
    peer: str

    def close(self) -> None: ...


def high_water(max_connections: int) -> int:
    """Client connections one process holds before shedding: the configured number, or
    the open-file limit less room for upstream connections, logs and the listener."""
    if max_connections > 0:
        return max_connections
    limit = nofile_limit()
    return max(16, limit - max(64, limit // 5))


class Admission:
    """Counts client connections by address and by state (silent, idle, busy)."""

    def __init__(
        self, max_per_ip: int, max_connections: int, exempt: tuple[Network, ...] = ()
    ) -> None:
        self.max_per_ip = max_per_ip
        self._exempt = exempt
        self.high_water = high_water(max_connections)
        self._per_ip: dict[str, int] = {}
        self._open: set[Connection] = set()
        # Insertion-ordered, so the first key is the oldest.
        self._silent: dict[Connection, None] = {}  # never sent a byte
        self._idle: dict[Connection, None] = {}  # between keep-alive requests
        self.refused = 0
        self.shed = 0
        self._logged = 0.0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: Connection) -> int:
        """Count a new connection; or the status to refuse it with: 429 when its address
        is over the cap, 503 when the process is full of busy connections."""
        if (
            self.max_per_ip
            and self._per_ip.get(conn.peer, 0) >= self.max_per_ip
            and not self._is_exempt(conn.peer)
        ):
            self._note_refused(f"{conn.peer} already holds {self.max_per_ip} connections")
            return 429
        if len(self._open) >= self.high_water and not self._shed():
            self._note_refused(f"{len(self._open)} connections are open and all are busy")
            return 503
        self._open.add(conn)
        self._per_ip[conn.peer] = self._per_ip.get(conn.peer, 0) + 1
        self._silent[conn] = None
        return 0

    def _is_exempt(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self._exempt)

    def spoke(self, conn: Connection) -> None:
        """The connection sent bytes: it is mid-request, no longer sheddable."""
        self._silent.pop(conn, None)
        self._idle.pop(conn, None)

    def idle(self, conn: Connection) -> None:
        """The connection answered its requests and waits for another (keep-alive)."""
        if conn in self._open:
            self._idle[conn] = None

    def release(self, conn: Connection) -> None:
        if conn not in self._open:
            return
        self._open.discard(conn)
        self._silent.pop(conn, None)
        self._idle.pop(conn, None)
        left = self._per_ip[conn.peer] - 1
        if left:
            self._per_ip[conn.peer] = left
        else:
            del self._per_ip[conn.peer]

    def _shed(self) -> bool:
        """Close up to a batch of the oldest silent connections; when there are none, of
        the oldest idle keep-alive ones."""
        pool = self._silent or self._idle
        victims: list[Connection] = []
        for conn in pool:
            victims.append(conn)
            if len(victims) >= _SHED_BATCH:
                break
        for conn in victims:
            self.release(conn)
            conn.close()
        if victims:
            self.shed += len(victims)
            self._note(
                f"{len(self._open)} connections open (high-water {self.high_water}): "
                f"closed {len(victims)} idle ones"
            )
        return bool(victims)

    def _note_refused(self, why: str) -> None:
        self.refused += 1
        self._note(f"refusing connections: {why}")

    def _note(self, message: str) -> None:
        """Log at most one line per interval: a flood must not flood the log."""
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY:
            self._logged = now
            log.warning("proxy: %s (%d refused, %d shed so far)", message, self.refused, self.shed)
