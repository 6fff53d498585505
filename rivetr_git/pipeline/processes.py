"""An app's running processes: stop, start, logs, and one-off commands (`ps:*`, `logs`, `run`).

Restarts are deployments (see Deployer.restart): a fresh container, health-checked and
switched without downtime. Stop and start act on the live release's own container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace

from rivetr_git.errors import NotFound, RivetrError, ValidationError
from rivetr_git.models import App, Deployment
from rivetr_git.pipeline import health, scale
from rivetr_git.pipeline.labels import labels, network_name
from rivetr_git.pipeline.mounts import container_mounts
from rivetr_git.pipeline.promote import SWITCH_TIMEOUT, upstream_of
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import (
    LABEL_DEPLOYMENT,
    LABEL_ONEOFF,
    ContainerInfo,
    ContainerSpec,
    OnOutput,
    Runtime,
)
from rivetr_git.store.database import Store
from rivetr_git.terminal import ByteNeutraliser

log = logging.getLogger(__name__)

EnvOf = Callable[[Deployment], Awaitable[dict[str, str]]]


class Processes:
    storage_root = ""  # the setting: host mounts are checked against it at every start

    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        routes: RouteTable,
        instance: str,
        env_of: EnvOf,
        stop_timeout: int,
        drain_timeout: float,
        restarts: Mapping[str, int] | None = None,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._routes = routes
        self._instance = instance
        self._env_of = env_of
        self._stop_timeout = stop_timeout
        self._drain_timeout = drain_timeout
        self._restarts = restarts if restarts is not None else {}  # container id -> count

    async def _live(self, app: App) -> Deployment:
        current = await self._store.current_deployment(app)
        if current is None or not current.container_id:
            raise NotFound(f"{app.name} has nothing deployed yet; push to it first")
        return current

    async def stop(self, app: App) -> str:
        """Stop the live container; the proxy answers 503 until `start`."""
        current = await self._live(app)
        if app.stopped:
            raise ValidationError(f"{app.name} is already stopped; ps:start {app.name} starts it")
        await self._store.update_app(app.name, stopped=True)
        self._routes.set(upstream_of(current, current.host_port or 0, stopped=True))
        release = labels(self._instance, app.name, current.id)
        rest = [
            c
            for c in await scale.release_containers(self._runtime, release)
            if c.id != current.container_id
        ]
        backends = [upstream_of(current)] + [
            replace(upstream_of(current), port=c.host_port)
            for c in rest
            if c.host_port and scale.process_of(c).startswith("web.")
        ]
        await asyncio.gather(*(self._routes.wait_drained(b, self._drain_timeout) for b in backends))
        assert current.container_id is not None
        await asyncio.gather(
            *(
                self._runtime.stop(cid, self._stop_timeout)
                for cid in [current.container_id, *(c.id for c in rest)]
            )
        )
        return f"stopped {app.name} (release #{current.id}); ps:start {app.name} starts it again"

    async def start(self, app: App, host_header: str, policy: health.HealthPolicy) -> str:
        """Start the stopped live container again, health-check it, route to it."""
        current = await self._live(app)
        if not app.stopped:
            raise ValidationError(f"{app.name} is not stopped; ps:restart {app.name} restarts it")
        assert current.container_id is not None
        info = await self._runtime.inspect(current.container_id)
        if info is None:
            raise NotFound(
                f"the container of release #{current.id} is gone; "
                f"ps:restart {app.name} starts a fresh one"
            )
        if not info.running:
            info = await self._runtime.start(current.container_id)
        if info.host_port is None:
            raise RivetrError(
                f"{app.name}'s container did not come up; ps:restart {app.name} "
                "starts a fresh one, logs shows its output"
            )
        release = labels(self._instance, app.name, current.id)
        for c in await scale.release_containers(self._runtime, release):
            if not c.running:  # the release's other processes (more web, workers)
                await self._runtime.start(c.id)
        replicas = [
            c
            for c in await scale.release_containers(self._runtime, release)
            if c.id != info.id and c.host_port and scale.process_of(c).startswith("web.")
        ]
        await asyncio.gather(
            *(
                health.wait_healthy(self._runtime, c.id, c.host_port or 0, host_header, policy)
                for c in (info, *replicas)
            )
        )
        others = tuple(("127.0.0.1", c.host_port or 0) for c in replicas)
        await self._store.set_status(current.id, current.status, host_port=info.host_port)
        await self._store.update_app(app.name, stopped=False)
        fresh = await self._store.get_deployment(current.id)
        self._routes.set(upstream_of(fresh, info.host_port, others=others))
        await self._routes.wait_applied(SWITCH_TIMEOUT)  # proxies in other processes too
        return f"started {app.name} (release #{current.id})"

    async def ps(self, app: App) -> list[str]:
        """`ps`: every long-running container of the app (a replaced release's too, while
        it drains), as a table."""
        found = [
            c
            for c in await self._runtime.list_containers(labels(self._instance, app.name))
            if not c.labels.get(LABEL_ONEOFF)
        ]
        if not found:
            return [f"{app.name} runs no containers; push to it, or ps:start {app.name}"]
        found.sort(key=lambda c: (-int(c.labels.get(LABEL_DEPLOYMENT, "0")), scale.sort_key(c)))
        return scale.ps_table(found, self._restarts)

    async def live_containers(self, app: App) -> list[ContainerInfo]:
        """The live release's long-running containers: web.1, web.2, ..., then the others."""
        current = await self._live(app)
        return await scale.release_containers(
            self._runtime, labels(self._instance, app.name, current.id)
        )

    async def logs(self, app: App, lines: int | None, follow: bool, on_output: OnOutput) -> None:
        """The live release's output: one container's as it is; several at once, each line
        after its process (`worker.1 | ...`), as foreman and compose show them."""
        found = await self.live_containers(app)
        if len(found) <= 1:
            current = await self._live(app)
            assert current.container_id is not None
            async with _neutralised(on_output) as safe:
                await self._runtime.follow_logs(current.container_id, lines, follow, safe)
            return
        width = max(len(scale.process_of(c)) for c in found)

        async def one(info: ContainerInfo) -> None:
            prefix = f"{scale.process_of(info):<{width}} | ".encode()
            prefixer = LinePrefixer(prefix, on_output)
            async with _neutralised(prefixer.feed) as safe:
                await self._runtime.follow_logs(info.id, lines, follow, safe)
            await prefixer.close()

        if follow:
            await asyncio.gather(*(one(c) for c in found))
        else:
            for info in found:  # history: one process after another, each in order
                await one(info)

    async def run(self, app: App, command: list[str], on_output: OnOutput) -> int:
        """Run `command` in a new container of the live release, with its env and limits."""
        spec = await self.oneoff_spec(app, command)
        async with _neutralised(on_output) as safe:
            return await self._runtime.run_once(spec, command, safe)

    async def oneoff_spec(self, app: App, command: list[str]) -> ContainerSpec:
        """A one-off container of the live release (`run`, cron jobs, consoles)."""
        if not command:
            raise ValidationError(f"give a command, e.g. run {app.name} sh -c 'echo hello'")
        current = await self._live(app)
        assert current.image is not None
        env = await self._env_of(current)
        return ContainerSpec(
            name=f"rivetr-{self._instance}-{app.name}-run-{secrets.token_hex(4)}",
            image=current.image,
            port=0,
            env=env,
            labels={**labels(self._instance, app.name), LABEL_ONEOFF: "1"},
            cpus=app.cpu_limit,
            memory=app.memory_limit,
            network=network_name(self._instance, app.name),
            mounts=await container_mounts(self._store, self._instance, app, self.storage_root),
        )


class LinePrefixer:
    """Feeds `on_output` whole lines, each after `prefix` (an unfinished last line at
    `close`), so that lines of processes followed at once never mix."""

    def __init__(self, prefix: bytes, on_output: OnOutput) -> None:
        self._prefix = prefix
        self._on_output = on_output
        self._held = b""

    async def feed(self, data: bytes) -> None:
        *whole, self._held = (self._held + data).split(b"\n")
        if whole:
            await self._on_output(b"".join(self._prefix + line + b"\n" for line in whole))

    async def close(self) -> None:
        if self._held:
            await self._on_output(self._prefix + self._held + b"\n")
            self._held = b""


@contextlib.asynccontextmanager
async def _neutralised(on_output: OnOutput) -> AsyncIterator[OnOutput]:
    """`on_output` fed what an app prints with its control characters neutralised."""
    stream = ByteNeutraliser()

    async def safe(data: bytes) -> None:
        if out := stream.feed(data):
            await on_output(out)

    yield safe
    if rest := stream.close():
        await on_output(rest)
