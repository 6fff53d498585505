"""After the switch: watch the new release for a while, and roll back if it falls over.

The previous release keeps running (without traffic) until the watch window has passed,
so a rollback is a route swap back to a container that is already up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rivetr_git.models import Deployment, Status
from rivetr_git.pipeline import health, promote, scale
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import Runtime
from rivetr_git.store.database import Store

log = logging.getLogger(__name__)

_CHECK_EVERY = 0.5
_FAILED_PROBES = 2  # in a row: one slow answer under load is not a broken release


@dataclass(frozen=True)
class Switch:
    """One route switch: `new` went live in place of `previous`."""

    new: Deployment
    previous: Deployment | None
    host_header: str
    policy: health.HealthPolicy


async def first_failure(
    runtime: Runtime, switch: Switch, window: float, superseded: asyncio.Event
) -> str | None:
    """Watch the new release for `window` seconds; return why it failed, or None."""
    new = switch.new
    assert new.container_id is not None and new.host_port is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window
    failed_probes = 0
    while (remaining := deadline - loop.time()) > 0:
        try:
            await asyncio.wait_for(superseded.wait(), min(_CHECK_EVERY, remaining))
            return None  # a newer release went live: it is watched now
        except TimeoutError:
            pass
        info = await runtime.inspect(new.container_id)
        if info is None or not info.running:
            code = info.exit_code if info else "?"
            return f"container exited (exit code {code}) within the watch window"
        problem = await health.probe(
            "127.0.0.1",
            new.host_port,
            switch.policy.path,
            switch.host_header,
            switch.policy.timeout,
        )
        failed_probes = failed_probes + 1 if problem else 0
        if failed_probes >= _FAILED_PROBES:
            return f"health check failed within the watch window ({problem})"
    return None


async def roll_back(
    store: Store, routes: RouteTable, runtime: Runtime, switch: Switch, reason: str
) -> bool:
    """Route back to the previous release if its container is still up. True if done."""
    previous = switch.previous
    if previous is None or not previous.container_id:
        return False
    info = await runtime.inspect(previous.container_id)
    if info is None or not info.running or info.host_port is None:
        return False
    others = await scale.web_replicas(runtime, scale.release_labels(info))
    routes.set(promote.upstream_of(previous, info.host_port, others=others))
    await routes.wait_applied(promote.SWITCH_TIMEOUT)
    await store.promote(previous.id, previous.app_id)
    await store.set_status(
        switch.new.id, Status.FAILED, error_message=f"rolled back to #{previous.id}: {reason}"
    )
    return True


async def after_switch(
    store: Store,
    routes: RouteTable,
    runtime: Runtime,
    switch: Switch,
    *,
    window: float,
    auto_rollback: bool,
    drain_timeout: float,
    stop_timeout: int,
    superseded: asyncio.Event,
    on_rollback: Callable[[Switch, str], None],
    restart_previous: Callable[[Switch, str], Awaitable[None]],
) -> None:
    """Watch, then either roll back (retiring the new release) or retire the previous one.

    When the previous release's container is gone, `restart_previous` starts it again from
    its image (a rollback deployment, with its own health check).
    """
    reason = await first_failure(runtime, switch, window, superseded) if auto_rollback else None
    if reason is not None and await roll_back(store, routes, runtime, switch, reason):
        log.warning(
            "%s: deployment #%s rolled back to #%s: %s",
            switch.new.app_name,
            switch.new.id,
            switch.previous.id if switch.previous else "?",
            reason,
        )
        on_rollback(switch, reason)
        await promote.retire(runtime, routes, switch.new, drain_timeout, stop_timeout)
        return
    if reason is not None and switch.previous is not None:
        await restart_previous(switch, reason)
        return
    if reason is not None:
        log.warning(
            "%s: deployment #%s failed after going live (%s) and there is no "
            "previous release to roll back to",
            switch.new.app_name,
            switch.new.id,
            reason,
        )
    if switch.previous is not None:
        await promote.retire(runtime, routes, switch.previous, drain_timeout, stop_timeout)
