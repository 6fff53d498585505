"""Settings of the HTTP side: the API, the git-host webhooks and /metrics (aiohttp)."""

from __future__ import annotations

from dataclasses import dataclass

from rivetr_git import validate
from rivetr_git.settings.declare import _count, _port, _seconds, setting


def _public_url(value: object) -> str:
    return "" if value == "" else validate.http_url(value).rstrip("/")


@dataclass(frozen=True)
class ApiSettings:
    api_host: str = setting(
        "127.0.0.1",
        "address the HTTP API, webhooks and /metrics listen on (0.0.0.0 for git hosts to "
        "reach the webhooks; put TLS in front)",
        validate.host,
    )
    api_port: int = setting(8081, "HTTP API port (0: pick a free one)", _port)
    api_public_url: str = setting(
        "",
        "the API's URL as git hosts reach it, e.g. https://deploy.example.com, shown by "
        "git:webhook ('' shows http://api_host:api_port)",
        _public_url,
    )
    api_auth_failures: int = setting(
        10,
        "failed API logins one address may make per api_auth_window before it gets 429",
        _count,
    )
    api_auth_window: float = setting(
        60.0, "seconds over which api_auth_failures are counted", _seconds
    )
