"""JSON answers of the HTTP edge: errors with a message and a stable code, turned from the
one exception tree (errors.py) here and nowhere else; never a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from rivetr_git.errors import (
    AccessDenied,
    AlreadyExists,
    ConfigError,
    DeployFailed,
    NotFound,
    RivetrError,
    UsageHelp,
    ValidationError,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# (exception class, HTTP status, code): the first that matches wins.
_ERRORS: tuple[tuple[type[RivetrError], int, str], ...] = (
    (NotFound, 404, "not_found"),
    (AccessDenied, 403, "forbidden"),
    (AlreadyExists, 409, "already_exists"),
    (ValidationError, 400, "invalid"),
    (ConfigError, 400, "invalid"),
    (UsageHelp, 400, "invalid"),
    (DeployFailed, 422, "deploy_failed"),
)


class ApiError(Exception):
    """An answer decided at the edge itself (auth, limits, a bad body)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers or None
    )


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as JSON: ApiError, RivetrError by kind, aiohttp's own 404/405, and
    anything unexpected as a 500 whose details stay in the server log."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error(exc.status, exc.code, exc.message)
    except RivetrError as exc:
        for kind, status, code in _ERRORS:
            if isinstance(exc, kind):
                return error(status, code, str(exc))
        return error(400, "failed", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        codes = {404: "no_such_route", 405: "method_not_allowed", 413: "too_large"}
        return error(exc.status, codes.get(exc.status, "http_error"), exc.reason)
    except Exception:
        log.exception("API request %s %s failed", request.method, request.path)
        return error(500, "internal", "internal error in rivetr-git; see the server log")
