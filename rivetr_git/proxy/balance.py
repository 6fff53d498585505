"""Spreading an app's requests over its web containers (`ps:scale web=N`).

The order a request tries them in: backends that answered lately first, then the fewest
requests in flight, then round robin among equals. A backend that refused a connection
(crashed, stopped, killed) is tried last for `RETRY_AFTER` seconds, and first-class again
once it answers a request.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from rivetr_git.proxy.routes import InFlight, Upstream

RETRY_AFTER = 2.0  # seconds a backend that failed is only a last resort


class Balancer:
    def __init__(self, in_flight: InFlight, clock: Callable[[], float] = time.monotonic) -> None:
        self._in_flight = in_flight
        self._clock = clock
        self._turn = itertools.count()
        self._down: dict[Upstream, float] = {}  # backend -> until when it is a last resort

    def order(self, upstream: Upstream) -> list[Upstream]:
        """The route's backends in the order to try them (one: itself, at no cost)."""
        if not upstream.others:
            return [upstream]
        backends = upstream.backends()
        turn = next(self._turn)
        now = self._clock()
        count = self._in_flight.count
        size = len(backends)

        def key(pair: tuple[int, Upstream]) -> tuple[bool, int, int]:
            index, backend = pair
            down = self._down.get(backend, 0.0) > now
            return (down, count(backend), (index - turn) % size)

        return [b for _, b in sorted(enumerate(backends), key=key)]

    def failed(self, backend: Upstream) -> None:
        """`backend` did not take a request: others go first for a while."""
        now = self._clock()
        if len(self._down) > 256:  # retired releases' backends never answer again
            self._down = {b: until for b, until in self._down.items() if until > now}
        self._down[backend] = now + RETRY_AFTER

    def answered(self, backend: Upstream) -> None:
        if self._down:
            self._down.pop(backend, None)
