"""The HTTP edge's server: aiohttp on api_host:api_port with the webhooks, /api/v1/ and
/metrics. Built by the daemon (the composition root) with what it answers from."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from aiohttp import web

from rivetr_git import __version__
from rivetr_git.admin.service import Admin
from rivetr_git.api.auth import Auth
from rivetr_git.api.metrics import Metrics
from rivetr_git.api.openapi import document
from rivetr_git.api.replies import json_errors, ok
from rivetr_git.api.v1 import PREFIX, V1
from rivetr_git.api.webhooks import Webhooks
from rivetr_git.errors import ConfigError
from rivetr_git.pipeline.deployer import Job
from rivetr_git.pipeline.git_source import GitSources
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ApiServer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        admin: Admin,
        sources: GitSources,
        metrics: Metrics,
        app_url: Callable[[str], str],
        job_of: Callable[[int], Job | None],
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._auth = Auth(store, settings.api_auth_failures, settings.api_auth_window)
        self._webhooks = Webhooks(store, sources, metrics.webhook_queued)
        # Past the webhooks' own 1 MB check, no API body needs more.
        self.app = web.Application(middlewares=[json_errors], client_max_size=1 << 20)
        router = self.app.router
        router.add_post(r"/hooks/{host:github|gitlab|gitea}/{app}", self._webhooks.handle)
        router.add_get(f"{PREFIX}/openapi.json", self._openapi)
        router.add_get("/metrics", self._scrape)
        V1(store, admin, sources, self._auth, app_url, job_of).add_routes(router)
        self._runner: web.AppRunner | None = None
        self.bound_port = settings.api_port

    async def _openapi(self, request: web.Request) -> web.Response:
        return ok(document(__version__))

    async def _scrape(self, request: web.Request) -> web.Response:
        # Loopback-only servers are scraped by the machine itself; anywhere else a token.
        if not is_loopback(self._settings.api_host):
            await self._auth.caller(request)
        return web.Response(
            body=await self._metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        host, port = self._settings.api_host, self._settings.api_port
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(
                f"the HTTP API cannot listen on {host}:{port} ({exc.strerror}); set api_port "
                "(0 picks a free one) or api_host"
            ) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.bound_port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self._webhooks.close()
        await self._metrics.close()
        if self._runner is not None:
            await self._runner.cleanup()
