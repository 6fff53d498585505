"""The OpenAPI 3.1 document of /api/v1/, built from the route table the server serves."""

from __future__ import annotations

import re
from typing import Any

from rivetr_git.api.v1 import PREFIX, ROUTES

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}


def _operation(method: str, summary: str, path: str, changes: bool) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
    responses: dict[str, Any] = {
        "200": {"description": "OK (JSON)"},
        "401": {"description": "no or unknown token", "content": _json(_ERROR)},
        "404": {"description": "no such app (or not the token's)", "content": _json(_ERROR)},
        "429": {"description": "too many failed logins", "content": _json(_ERROR)},
    }
    if changes:
        responses["403"] = {
            "description": "read-only token or admin only",
            "content": _json(_ERROR),
        }
        responses["422"] = {"description": "the action failed", "content": _json(_ERROR)}
    operation: dict[str, Any] = {"summary": summary, "parameters": params, "responses": responses}
    if method in ("POST",):
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return operation


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def document(version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = _operation(
            route.method, route.summary, route.path, route.changes
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": "rivetr-git API", "version": version},
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
        "paths": paths,
    }
