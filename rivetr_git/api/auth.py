"""Bearer tokens of the HTTP API (tokens:create), and the limit on failed logins per address.

A request's token is hashed and looked up; what it may see and do is the Caller the admin
verbs already check (admin/dispatch.py), so a token limited to apps sees only those apps.
"""

from __future__ import annotations

import collections
import time

from aiohttp import web

from rivetr_git.admin.dispatch import Caller
from rivetr_git.admin.git_verbs import token_digest
from rivetr_git.api.replies import ApiError
from rivetr_git.store.database import Store

_MAX_ADDRESSES = 10_000  # addresses with failures kept before quiet ones are swept
_TOUCH_EVERY = 60.0  # seconds between last_used updates of one token (a write per request
# would cost more than the request)


class Auth:
    def __init__(self, store: Store, max_failures: int, window: float) -> None:
        self._store = store
        self._max = max_failures
        self._window = window
        self._failures: dict[str, collections.deque[float]] = {}
        self._touched: dict[int, float] = {}

    def _recent(self, address: str, now: float) -> collections.deque[float]:
        times = self._failures.setdefault(address, collections.deque())
        while times and times[0] < now - self._window:
            times.popleft()
        if not times:
            del self._failures[address]  # a quiet address keeps no state
        return times

    async def caller(self, request: web.Request) -> Caller:
        """The token's Caller. Raises ApiError 401 (no or unknown token) or 429 (this
        address failed too often lately)."""
        address = request.remote or "unknown"
        now = time.monotonic()
        if len(self._recent(address, now)) >= self._max:
            raise ApiError(
                429,
                "rate_limited",
                f"too many failed logins from {address}; wait {self._window:g}s",
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        found = None
        if scheme.lower() == "bearer" and token.strip():
            found = await self._store.api_token_by_hash(token_digest(token.strip()))
        if found is None:
            if len(self._failures) > _MAX_ADDRESSES:  # many addresses: forget quiet ones
                for quiet in [a for a, t in self._failures.items() if t[-1] < now - self._window]:
                    del self._failures[quiet]
            self._failures.setdefault(address, collections.deque()).append(now)
            raise ApiError(401, "unauthorized", "send a valid token: Authorization: Bearer TOKEN")
        if now - self._touched.get(found.id, -_TOUCH_EVERY) >= _TOUCH_EVERY:
            self._touched[found.id] = now
            await self._store.touch_api_token(found.id)
        return Caller(None, token=found)
