"""Backing services' containers: create (healthy before it returns), link to apps over
their private networks, expose on 127.0.0.1, destroy; started again with the server.

A service runs in its own container on a network of its own, its data on a named volume
that belongs to it. Linking joins the container to the app's network under the service's
name, so the app reaches it as NAME:PORT and no other app can. Names of its engine objects
hold a dot (`rivetr-INSTANCE.svc.NAME`), which app names cannot, so they never meet an
app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable

from rivetr_git.errors import AlreadyExists, RivetrError, ServiceFailed, ValidationError
from rivetr_git.names import validate_app_name
from rivetr_git.runtime.base import (
    LABEL_APP,
    LABEL_INSTANCE,
    LABEL_SERVICE,
    ContainerInfo,
    ContainerSpec,
    Mount,
    OnOutput,
    Runtime,
    Terminal,
)
from rivetr_git.secrets.crypto import Cipher
from rivetr_git.services.kinds import KINDS, Kind, env_name_for, kind_of, with_version
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.store.schema import now
from rivetr_git.store.services import ServiceRow

log = logging.getLogger(__name__)

STOP_TIMEOUT = 30  # seconds a database gets to shut down cleanly


def service_name(name: str) -> str:
    """Service names are DNS labels (apps reach them by name), like app names."""
    try:
        return validate_app_name(name)
    except ValidationError:
        raise ValidationError(
            f"invalid service name {name!r}: use 1-63 lower-case letters, digits and dashes, "
            "starting with a letter (e.g. 'db' or 'cache-1')"
        ) from None


class Services:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        runtime: Runtime,
        cipher: Cipher,
        instance: str,
        app_network: Callable[[str], str],
    ) -> None:
        self._settings = settings
        self._store = store
        self._runtime = runtime
        self._cipher = cipher
        self._instance = instance
        self._app_network = app_network
        self._locks: dict[str, asyncio.Lock] = {}
        self.busy: set[str] = set()  # services stopped on purpose: the monitor waits

    # --- names --------------------------------------------------------------------------------

    def engine_name(self, name: str) -> str:
        """The container's, volume's and network's name."""
        return f"rivetr-{self._instance}.svc.{name}"

    def labels(self, name: str) -> dict[str, str]:
        return {LABEL_INSTANCE: self._instance, LABEL_SERVICE: name}

    def password(self, row: ServiceRow) -> str:
        return self._cipher.decrypt(f"service:{row.name}", "password", row.password)

    def url(self, row: ServiceRow, hidden: bool = False) -> str:
        kind = KINDS[row.kind]
        return kind.url(row.name, "****" if hidden else self.password(row), row.name, kind.port)

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """One change to a service at a time; the monitor leaves it alone meanwhile."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            self.busy.add(name)
            try:
                yield
            finally:
                self.busy.discard(name)

    # --- create and destroy -------------------------------------------------------------------

    async def create(self, kind_name: str, name: str, version: str | None) -> ServiceRow:
        """Start a new service and wait until it is healthy. Nothing is left on failure."""
        kind = kind_of(kind_name)
        name = service_name(name)
        image = with_version(getattr(self._settings, f"{kind.name}_image"), version)
        if await self._store.find_service(name) is not None:
            raise AlreadyExists(f"service '{name}' already exists; `services:info {name}`")
        volume = self.engine_name(name)
        if volume in await self._runtime.list_volumes({LABEL_INSTANCE: self._instance}):
            raise AlreadyExists(
                f"the data of an earlier service '{name}' is still here (volume {volume}, "
                "kept by services:destroy without --purge-data); choose another name, or "
                f"remove it with `docker volume rm {volume}`"
            )
        await self._runtime.ensure_image(image)  # an unknown version fails here, cleanly
        password = secrets.token_hex(24)
        blob = self._cipher.encrypt(f"service:{name}", "password", password)
        row = await self._store.add_service(name, kind.name, image, blob, now())
        async with self.exclusive(name):
            try:
                await self._runtime.create_volume(volume, self.labels(name))
                info = await self._start_container(row)
                await self.wait_healthy(row, info.id)
            except BaseException:
                await asyncio.shield(self._remove(row, purge=True))
                raise
        return await self._store.get_service(name)

    async def destroy(self, name: str, purge: bool) -> None:
        """Remove the service's container and network (its volume too with `purge`) and
        its row; links must be gone first (unlink)."""
        row = await self._store.get_service(name)
        async with self.exclusive(name):
            await self._remove(row, purge)

    async def _remove(self, row: ServiceRow, purge: bool) -> None:
        for c in await self._runtime.list_containers(self.labels(row.name)):
            await self._runtime.remove(c.id)
        await self._runtime.remove_network(self.engine_name(row.name))
        if purge:
            await self._runtime.remove_volume(self.engine_name(row.name))
        await self._store.delete_service(row.name)

    # --- the container ------------------------------------------------------------------------

    def _spec(self, row: ServiceRow) -> ContainerSpec:
        kind = KINDS[row.kind]
        name = self.engine_name(row.name)
        return ContainerSpec(
            name=name,
            image=row.image,
            port=kind.port if row.host_port is not None else 0,  # private: published nowhere
            host_port=row.host_port or None,
            env=kind.env(row.name, self.password(row)),
            labels=self.labels(row.name),
            network=name,
            mounts=(Mount(name, kind.data_path),),
            command=kind.command,
        )

    async def _start_container(self, row: ServiceRow) -> ContainerInfo:
        """A fresh container (a leftover of the same name removed), joined to the networks
        of its linked apps."""
        for c in await self._runtime.list_containers(self.labels(row.name)):
            await self._runtime.remove(c.id)
        info = await self._runtime.run(self._spec(row))
        await self._store.update_service(row.name, container_id=info.id)
        for link in await self._store.service_links(service=row.name):
            await self._join(info.id, row.name, link.app)
        # Read the port after joining: Docker may publish it anew when a network is joined.
        info = await self._runtime.inspect(info.id) or info
        exposed = info.host_port if row.host_port is not None else None
        await self._store.update_service(row.name, host_port=exposed)
        return info

    async def _join(self, container_id: str, name: str, app: str) -> None:
        labels = {LABEL_INSTANCE: self._instance, LABEL_APP: app}
        await self._runtime.connect_network(container_id, self._app_network(app), [name], labels)

    async def recreate(self, row: ServiceRow) -> ContainerInfo:
        """Replace the container (same volume, links), e.g. to publish it; healthy after."""
        if row.container_id:
            await self._runtime.stop(row.container_id, STOP_TIMEOUT)
        info = await self._start_container(row)
        await self.wait_healthy(await self._store.get_service(row.name), info.id)
        return info

    async def wait_healthy(self, row: ServiceRow, container_id: str) -> None:
        """Until the kind's health check passes; ServiceFailed (with the container's last
        lines) if the container stops or service_start_timeout passes."""
        kind = KINDS[row.kind]
        deadline = time.monotonic() + self._settings.service_start_timeout
        while True:
            info = await self._runtime.inspect(container_id)
            if info is None or not info.running:
                code = info.exit_code if info is not None else None
                raise ServiceFailed(
                    f"{row.name} ({row.image}) stopped while starting (exit code {code}); its "
                    f"last lines:\n{await self._runtime.logs(container_id, 20)}"
                )
            code, _ = await self._runtime.exec(container_id, kind.health(row.name))
            if code == 0:
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(
                    f"{row.name} did not pass its health check within "
                    f"{self._settings.service_start_timeout:g}s (setting "
                    f"service_start_timeout); its last lines:\n"
                    f"{await self._runtime.logs(container_id, 20)}"
                )
            await asyncio.sleep(0.25)

    async def start_all(self) -> None:
        """At server start: every service's container runs again (made anew from its
        volume if it is gone)."""
        for row in await self._store.list_services():
            info = await self._runtime.inspect(row.container_id) if row.container_id else None
            try:
                if info is None:
                    log.warning("the container of service %s is gone; starting a new one", row.name)
                    await self._start_container(row)
                elif not info.running:
                    await self._runtime.start(info.id)
            except RivetrError as exc:
                log.error("service %s did not start: %s", row.name, exc)

    # --- links --------------------------------------------------------------------------------

    async def link(self, name: str, app_name: str) -> str:
        """Give the app the service's URL and a way to reach it; the env var's name."""
        row = await self._store.get_service(name)
        app = await self._store.get_app(app_name)
        if any(link.app == app.name for link in await self._store.service_links(service=name)):
            raise AlreadyExists(f"{name} is already linked to {app.name}")
        taken = {n for n, _ in await self._store.env_values(app)}
        kind: Kind = KINDS[row.kind]
        env_name = env_name_for(kind, row.name, taken)
        if env_name in taken:
            raise AlreadyExists(
                f"{app.name} has {kind.env_var} and {env_name} already; unset one "
                f"(config:unset {app.name} {env_name}) and link again"
            )
        blob = self._cipher.encrypt(app.name, env_name, self.url(row))
        if row.container_id:
            await self._join(row.container_id, row.name, app.name)
        await self._store.add_service_link(row, app, env_name, blob)
        return env_name

    async def unlink(self, name: str, app_name: str) -> str:
        """Take the URL away and leave the app's network; the env var's name."""
        row = await self._store.get_service(name)
        app = await self._store.get_app(app_name)
        env_name = await self._store.remove_service_link(row, app)
        if row.container_id:
            await self._runtime.disconnect_network(row.container_id, self._app_network(app.name))
        return env_name

    async def app_destroyed(self, app: str) -> None:
        """Before an app is destroyed: its services leave its network (so it can go)."""
        for link in await self._store.service_links(app=app):
            row = await self._store.get_service(link.service)
            if row.container_id:
                await self._runtime.disconnect_network(row.container_id, self._app_network(app))

    # --- exposing -----------------------------------------------------------------------------

    async def expose(self, name: str, host_port: int | None) -> int:
        """Publish the service on 127.0.0.1 (`host_port`, or a free one); the port."""
        if host_port is not None and not 1 <= host_port <= 65535:
            raise ValidationError(f"{host_port} is not a port; give 1-65535 or none")
        row = await self._store.get_service(name)
        async with self.exclusive(name):
            row = await self._store.update_service(name, host_port=host_port or 0)
            try:
                info = await self.recreate(row)
            except RivetrError:
                # The port may be taken: back to private, and running.
                await self.recreate(await self._store.update_service(name, host_port=None))
                raise
        return info.host_port or 0

    async def unexpose(self, name: str) -> None:
        row = await self._store.get_service(name)
        if row.host_port is None:
            return
        async with self.exclusive(name):
            await self.recreate(await self._store.update_service(name, host_port=None))

    # --- looking at it ------------------------------------------------------------------------

    async def state(self, row: ServiceRow) -> str:
        info = await self._runtime.inspect(row.container_id) if row.container_id else None
        if info is None:
            return "missing"
        return "running" if info.running else f"stopped (exit code {info.exit_code})"

    async def volume_size(self, name: str) -> int | None:
        return (await self._runtime.volume_sizes()).get(self.engine_name(name))

    async def logs(self, name: str, lines: int, follow: bool, on_output: OnOutput) -> None:
        row = await self._store.get_service(name)
        if row.container_id:
            await self._runtime.follow_logs(row.container_id, lines, follow, on_output)

    async def connect(self, name: str, terminal: Terminal) -> int:
        """The kind's client on a pty in the service's container; its exit code."""
        row = await self._store.get_service(name)
        if not row.container_id:
            raise ServiceFailed(f"{name} has no container; `services:info {name}`")
        command = KINDS[row.kind].connect(row.name)
        return await self._runtime.exec_console(row.container_id, command, terminal)
