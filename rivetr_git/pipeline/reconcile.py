"""Start-up reconciliation: make the world match the database after a start or a crash.

Interrupted deployments get the one failure clean-up, running releases get their routes back
(stopped containers started again), and containers and networks of this instance that
belong to no live release or app are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Mapping

from rivetr_git.errors import RivetrError
from rivetr_git.models import IN_FLIGHT, Status
from rivetr_git.pipeline.after_switch.cleanup import BuildGate
from rivetr_git.pipeline.builders import compose
from rivetr_git.pipeline.failure import FailureCleanup
from rivetr_git.pipeline.labels import labels, network_name
from rivetr_git.pipeline.scale import release_containers, web_replicas
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.runtime.base import LABEL_APP, LABEL_DEPLOYMENT, LABEL_ONEOFF, Runtime
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos

log = logging.getLogger(__name__)


async def reconcile(
    settings: Settings,
    store: Store,
    repos: Repos,
    runtime: Runtime,
    routes: RouteTable,
    instance: str,
) -> None:
    """Make the world match the database after a start or a crash.

    In-flight deployments were interrupted: mark them failed and remove what they left.
    Running releases get their routes back (restarting a stopped container if needed).
    Containers of this instance that belong to no live release are removed.
    """
    failures = FailureCleanup(
        store,
        repos,
        runtime,
        instance,
        settings.data_dir / "compose",
        settings.deploy_branch,
        BuildGate(),
    )
    for d in await store.deployments_with_status(IN_FLIGHT):
        # Only a push builds an image; a rollback's or restart's is a release's own.
        built = d.image if d.rollback_of is None else None
        await failures.undo(await store.get_app(d.app_name), d, built, "interrupted by restart")
    live = await _restore_routes(store, runtime, routes, instance)
    live_deployments = {str(d_id) for d_id in live.values()}
    for c in await runtime.list_containers(labels(instance)):
        # A live release's other containers (a compose group's services) stay too; one-off
        # `run` containers belonged to sessions that ended with the old process.
        deployment = c.labels.get(LABEL_DEPLOYMENT)
        if c.id not in live and (
            (deployment and deployment not in live_deployments) or c.labels.get(LABEL_ONEOFF)
        ):
            log.info("removing leftover container %s", c.name)
            await runtime.remove(c.id)
    # Networks of compose groups whose containers are gone (retired before a crash).
    apps = await store.list_apps()
    for app in apps:
        await compose.sweep(settings.data_dir / "compose", runtime, instance, app.name)
    await remove_orphan_networks(runtime, instance, {app.name for app in apps})
    tmp = settings.data_dir / "tmp"
    if tmp.is_dir():
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _restore_routes(
    store: Store, runtime: Runtime, routes: RouteTable, instance: str
) -> dict[str, int]:
    """Routes of the running releases, their stopped containers started again; returns the
    live containers (id -> deployment id)."""
    live: dict[str, int] = {}
    upstreams: list[Upstream] = []
    crashed = {a.name for a in await store.list_apps() if a.crashed_reason}
    stopped = {a.name for a in await store.list_apps() if a.stopped}
    for d in await store.deployments_with_status([Status.RUNNING]):
        port = d.host_port
        info = await runtime.inspect(d.container_id) if d.container_id else None
        if d.app_name in stopped:
            if info is not None:
                live[info.id] = d.id  # stopped by its owner (ps:stop): left as it is
            upstreams.append(
                Upstream(
                    app=d.app_name,
                    host="127.0.0.1",
                    port=port or 0,
                    deployment_id=d.id,
                    stopped=True,
                )
            )
            continue
        if d.app_name in crashed:
            if info is not None:
                live[info.id] = d.id  # kept for a look at its logs; not restarted
            if port:
                upstreams.append(
                    Upstream(
                        app=d.app_name,
                        host="127.0.0.1",
                        port=port,
                        deployment_id=d.id,
                        crashed=True,
                    )
                )
            continue
        if info is not None and not info.running:
            with contextlib.suppress(RivetrError):
                info = await runtime.start(info.id)
        if info is not None and info.running and info.host_port:
            port = info.host_port
            if port != d.host_port:
                await store.set_status(d.id, Status.RUNNING, host_port=port)
            live[info.id] = d.id
        else:
            log.warning(
                "container of %s (deployment #%s) is gone; it answers 502 until the next deploy",
                d.app_name,
                d.id,
            )
        if port:
            others = await _restart_rest(runtime, labels(instance, d.app_name, d.id))
            upstreams.append(Upstream(d.app_name, "127.0.0.1", port, d.id, others=others))
    routes.replace(upstreams, await store.all_domains())
    return live


async def _restart_rest(
    runtime: Runtime, release: Mapping[str, str]
) -> tuple[tuple[str, int], ...]:
    """A live release's other containers (more web, workers) run again; its other web
    containers (ps:scale), found by its labels, are returned for its route."""
    for c in await release_containers(runtime, release):
        if not c.running:
            with contextlib.suppress(RivetrError):
                await runtime.start(c.id)
    return await web_replicas(runtime, release)


async def remove_orphan_networks(runtime: Runtime, instance: str, apps: set[str]) -> None:
    """Remove the app networks of apps that are gone (a destroy cut short by a crash)."""
    for name, tags in (await runtime.list_networks(labels(instance))).items():
        app = tags.get(LABEL_APP, "")
        if name != network_name(instance, app) or app in apps:
            continue  # not an app network (e.g. a compose group's), or its app is alive
        log.info("removing the network of destroyed app %s", app)
        with contextlib.suppress(RivetrError):  # still in use: the next start tries again
            await runtime.remove_network(name)
