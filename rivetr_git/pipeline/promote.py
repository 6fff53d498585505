"""Stage *running*: record the release, swap the route, retire the previous container."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from rivetr_git.errors import RivetrError
from rivetr_git.models import Deployment
from rivetr_git.pipeline.labels import LABEL_PROCESS
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.runtime.base import LABEL_APP, LABEL_DEPLOYMENT, LABEL_INSTANCE, Runtime
from rivetr_git.store.database import Store

log = logging.getLogger(__name__)

SWITCH_TIMEOUT = 10.0  # seconds every proxy gets to apply a route switch

_RELEASE_LABELS = (LABEL_INSTANCE, LABEL_APP, LABEL_DEPLOYMENT)


def upstream_of(
    deployment: Deployment,
    host_port: int | None = None,
    crashed: bool = False,
    stopped: bool = False,
    others: tuple[tuple[str, int], ...] = (),
) -> Upstream:
    port = host_port if host_port is not None else deployment.host_port
    if port is None:
        raise RivetrError(f"deployment #{deployment.id} has no published port")
    return Upstream(
        app=deployment.app_name,
        host="127.0.0.1",
        port=port,
        deployment_id=deployment.id,
        crashed=crashed,
        stopped=stopped,
        others=others,
    )


async def promote(
    store: Store,
    routes: RouteTable,
    deployment: Deployment,
    host_port: int,
    others: tuple[tuple[str, int], ...] = (),
) -> Deployment | None:
    """Make `deployment` live (its web containers: the recorded one on `host_port`, and
    `others`); return the release it replaced, if any."""
    app = await store.get_app(deployment.app_name)
    previous = await store.current_deployment(app)
    await store.promote(deployment.id, app.id)
    # The one assignment that moves traffic ...
    routes.set(upstream_of(deployment, host_port, others=others))
    # ... and, with proxies in other processes (workers, nginx), the wait until they all
    # serve it, so "live" is true when the push says so.
    if not await routes.wait_applied(SWITCH_TIMEOUT):
        log.warning(
            "a proxy did not apply the switch to deployment #%s within %gs",
            deployment.id,
            SWITCH_TIMEOUT,
        )
    return previous


async def retire(
    runtime: Runtime,
    routes: RouteTable,
    deployment: Deployment,
    drain_timeout: float,
    stop_timeout: int,
) -> None:
    """Let a replaced release finish its in-flight requests, then stop and remove it.

    The route already points elsewhere, so it gets no new requests; every proxy (in this
    process or a worker) counts the ones still running, per web container. After
    `drain_timeout` it is stopped anyway. Every container of the release (web, workers, a
    compose group's services) gets SIGTERM, then SIGKILL after `stop_timeout`, all at once.
    """
    if not deployment.container_id:
        return
    try:
        info = await runtime.inspect(deployment.container_id)
        # The rest of the release (more web containers, background processes, a compose
        # deployment's other services), found by the deployment's labels.
        group = {k: v for k, v in (info.labels if info else {}).items() if k in _RELEASE_LABELS}
        rest = (
            [c for c in await runtime.list_containers(group) if c.id != deployment.container_id]
            if len(group) == len(_RELEASE_LABELS)
            else []
        )
    except RivetrError as exc:
        log.warning("could not list the containers of deployment #%s: %s", deployment.id, exc)
        rest = []
    backends: list[Upstream] = []
    if deployment.host_port is not None:
        first = upstream_of(deployment)
        backends = [first] + [
            replace(first, port=c.host_port)
            for c in rest
            if c.host_port and c.labels.get(LABEL_PROCESS, "").startswith("web.")
        ]
    drained = await asyncio.gather(*(routes.wait_drained(b, drain_timeout) for b in backends))
    if not all(drained):
        log.warning(
            "deployment #%s still had requests in flight after %gs; stopping it",
            deployment.id,
            drain_timeout,
        )
    await asyncio.gather(
        *(
            _stop(runtime, cid, stop_timeout)
            for cid in [deployment.container_id, *(c.id for c in rest)]
        )
    )


async def _stop(runtime: Runtime, container_id: str, stop_timeout: int) -> None:
    try:
        await runtime.stop(container_id, stop_timeout)
        await runtime.remove(container_id)
    except RivetrError as exc:
        # Start-up reconciliation removes whatever is left; never fail a live deploy for it.
        log.warning("could not retire container %s: %s", container_id[:12], exc)
