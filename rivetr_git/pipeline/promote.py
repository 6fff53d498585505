"""Stage *running*: record the release, swap the route, retire the previous container."""

from __future__ import annotations

import logging

from rivetr_git.errors import RivetrError
from rivetr_git.models import Deployment
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.runtime.base import Runtime
from rivetr_git.store import Store

log = logging.getLogger(__name__)


async def promote(
    store: Store, routes: RouteTable, deployment: Deployment, app_name: str, host_port: int
) -> Deployment | None:
    """Make `deployment` live; return the release it replaced, if any."""
    app = await store.get_app(app_name)
    previous = await store.current_deployment(app)
    await store.promote(deployment.id, app.id)
    # The one assignment that moves traffic.
    routes.set(Upstream(app=app_name, host="127.0.0.1", port=host_port,
                        deployment_id=deployment.id))
    return previous


async def retire(runtime: Runtime, container_id: str, stop_timeout: int) -> None:
    """Stop (SIGTERM, then SIGKILL after the grace period) and remove an old container."""
    try:
        await runtime.stop(container_id, stop_timeout)
        await runtime.remove(container_id)
    except RivetrError as exc:
        # Start-up reconciliation removes whatever is left; never fail a live deploy for it.
        log.warning("could not retire container %s: %s", container_id[:12], exc)
