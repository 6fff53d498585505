"""The composition root: builds every component, reconciles state, runs until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path

from rivetr_git import validate
from rivetr_git.admin.service import Admin, Caller, Session
from rivetr_git.errors import RivetrError, RuntimeUnavailable
from rivetr_git.models import IN_FLIGHT, Deployment, Status
from rivetr_git.notify import Notifier
from rivetr_git.pipeline.after_switch.cleanup import BuildGate
from rivetr_git.pipeline.after_switch.monitor import Monitor
from rivetr_git.pipeline.builders import compose
from rivetr_git.pipeline.deployer import Deployer
from rivetr_git.pipeline.failure import FailureCleanup
from rivetr_git.pipeline.labels import instance_id, labels, network_name
from rivetr_git.pipeline.processes import Processes
from rivetr_git.pipeline.push import PushHandler
from rivetr_git.pipeline.releases import ReleaseCommands
from rivetr_git.pipeline.scale import release_containers, web_replicas
from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.fdlimit import raise_nofile_limit
from rivetr_git.proxy.nginx import NginxProxy
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.proxy.server import ProxyServer
from rivetr_git.proxy.workers import ProxyWorkers
from rivetr_git.receiver.hook_socket import HookSocket
from rivetr_git.receiver.server import Receiver
from rivetr_git.runtime.base import LABEL_APP, LABEL_DEPLOYMENT, LABEL_ONEOFF, Runtime
from rivetr_git.runtime.docker import DockerRuntime
from rivetr_git.runtime.podman import PodmanRuntime
from rivetr_git.secrets.crypto import open_master_key
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.secrets.master_key import lock_master_key
from rivetr_git.settings import Settings
from rivetr_git.store.data_dir import make_private
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos

log = logging.getLogger(__name__)

STATE_FILE = "daemon.json"


def packaged_hooks_dir() -> Path:
    """hooks/ as installed in the wheel, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_hooks", here.parent / "hooks"):
        if (candidate / "post-receive").is_file():
            return candidate
    raise RivetrError("the git hooks are missing from this installation; reinstall rivetr-git")


def install_hooks(data_dir: Path) -> Path:
    """Copy the hooks into the data dir, executable, so every bare repo runs the same ones."""
    target = data_dir / "hooks"
    target.mkdir(parents=True, exist_ok=True)
    for hook in ("pre-receive", "post-receive"):
        shutil.copyfile(packaged_hooks_dir() / hook, target / hook)
        (target / hook).chmod(0o700)
    return target


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


def proxy_config(s: Settings) -> ProxyConfig:
    """The data plane's knobs, from the settings."""
    access_log = s.data_dir / s.access_log if s.access_log else None
    return ProxyConfig(
        header_timeout=s.proxy_header_timeout,
        keepalive_timeout=s.proxy_keepalive_timeout,
        first_byte_timeout=s.proxy_first_byte_timeout,
        max_conns_per_ip=s.proxy_max_conns_per_ip,
        connect_timeout=s.proxy_connect_timeout,
        read_timeout=s.proxy_read_timeout,
        upstream_connections=s.proxy_upstream_connections,
        max_body_size=validate.size(s.max_body_size) if s.max_body_size else 0,
        max_header_size=s.proxy_max_header_size,
        max_headers=s.proxy_max_headers,
        websocket_idle_timeout=s.websocket_idle_timeout,
        trusted_proxies=validate.networks(s.trusted_proxies),
        access_log=access_log,
        access_log_max_bytes=validate.size(s.access_log_max_size),
        access_log_backups=s.access_log_backups,
    )


async def connect_runtime(settings: Settings) -> Runtime:
    """The container runtime the `runtime` setting asks for, with its app network range."""
    runtime = await _connect_runtime(settings)
    if settings.app_networks:
        runtime.network_pool = ipaddress.IPv4Network(settings.app_networks)
    return runtime


async def _connect_runtime(settings: Settings) -> Runtime:
    """The container runtime the `runtime` setting asks for; `auto` tries Docker, then
    Podman, and logs which it picked. Raises RuntimeUnavailable."""
    run_dir = settings.data_dir / "run"
    if settings.runtime == "podman":
        return await PodmanRuntime.launch(run_dir, settings.podman_socket)
    if settings.runtime == "docker":
        return await DockerRuntime.connect()
    try:
        runtime: Runtime = await DockerRuntime.connect()
    except RuntimeUnavailable as docker_error:
        try:
            runtime = await PodmanRuntime.launch(run_dir, settings.podman_socket)
        except RuntimeUnavailable as podman_error:
            raise RuntimeUnavailable(
                f"runtime auto: neither Docker ({docker_error}) nor "
                f"Podman ({podman_error}) is available"
            ) from None
        log.info("runtime auto: using podman (no Docker engine answered)")
        return runtime
    log.info("runtime auto: using docker (the Docker engine answered)")
    return runtime


class Daemon:
    """Everything `rivetr-git serve` runs, wired together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run(self, stop: asyncio.Event | None = None) -> None:
        s = self.settings
        stop = stop or asyncio.Event()
        raise_nofile_limit()  # connections (proxy, SSH) are descriptors; workers inherit it
        make_private(s.data_dir)  # before the database or any key is written
        key_lock = lock_master_key(s.data_dir, exclusive=False)  # no rotation meanwhile
        try:
            store = await Store.open(s.db_path)
        except BaseException:
            key_lock.close()
            raise
        runtime: Runtime | None = None
        closers: list[object] = []
        try:
            # A bad key stops start-up here, before anything could need a value.
            env_vars = EnvVars(store, open_master_key(s.data_dir, await store.any_env_value()))
            runtime = await connect_runtime(s)
            monitor = await self._start(store, env_vars, runtime, closers)
            await _until(stop)
            log.info("shutting down; app containers keep running")
            monitor.cancel()
        finally:
            with contextlib.suppress(FileNotFoundError):
                (s.data_dir / STATE_FILE).unlink()
            for closer in reversed(closers):
                with contextlib.suppress(Exception):
                    await closer.close()  # type: ignore[attr-defined]
            if runtime is not None:
                await runtime.close()
            await store.close()
            key_lock.close()

    async def _start(
        self, store: Store, env_vars: EnvVars, runtime: Runtime, closers: list[object]
    ) -> asyncio.Task[None]:
        """Reconcile, then start every part; each started part goes on `closers`. Returns
        the crash monitor's task."""
        s = self.settings
        instance = instance_id(s.data_dir)
        repos = Repos(s.repos_dir)
        routes = RouteTable(s.base_domain)
        await reconcile(s, store, repos, runtime, routes, instance)
        notifier = Notifier(s)
        closers.append(notifier)
        deployer = Deployer(s, store, repos, runtime, routes, instance, notifier, env_vars)
        watcher = Monitor(s, store, runtime, routes, instance, notifier, deployer.is_watched)
        monitor = asyncio.create_task(watcher.run())
        admin = _admin(
            s, store, repos, runtime, routes, instance, deployer, env_vars, watcher.restarts
        )

        async def local_command(argv: list[str], session: Session) -> int:
            return await admin.run(argv, Caller(None), session)

        pushes = PushHandler(deployer, s.deploy_branch)
        hooks = HookSocket(s.data_dir / "run" / "hooks.sock", pushes.handle, local_command)
        proxy = _proxy(s, routes)
        receiver = Receiver(s, store, repos, hooks, install_hooks(s.data_dir), admin)
        await hooks.start()
        closers.append(hooks)
        await proxy.start()
        closers.append(proxy)
        deployer.set_public_port(proxy.bound_port)
        await receiver.start()
        closers.append(receiver)
        closers.append(deployer)
        self._write_state(receiver.bound_port, proxy.bound_port)
        log.info(
            "rivetr-git ready: ssh on %s:%s, proxy on %s:%s, %d app(s) routed, runtime %s",
            s.ssh_host,
            receiver.bound_port,
            s.proxy_host,
            proxy.bound_port,
            len(routes),
            runtime.name,
        )
        return monitor

    def _write_state(self, ssh_port: int, proxy_port: int) -> None:
        """Tell local tools (and tests) that the daemon is up and where."""
        state = {"pid": os.getpid(), "ssh_port": ssh_port, "proxy_port": proxy_port}
        path = self.settings.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)


async def _until(stop: asyncio.Event) -> None:
    """Wait for `stop`, or SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _proxy(s: Settings, routes: RouteTable) -> ProxyServer | ProxyWorkers | NginxProxy:
    """The data plane the settings ask for."""
    if s.proxy_backend == "nginx":
        return NginxProxy(
            routes,
            s.proxy_host,
            s.proxy_port,
            proxy_config(s),
            s.proxy_workers or 1,
            s.data_dir / "nginx",
            s.drain_timeout,
        )
    if s.proxy_workers:
        return ProxyWorkers(routes, s.proxy_host, s.proxy_port, proxy_config(s), s.proxy_workers)
    return ProxyServer(routes, s.proxy_host, s.proxy_port, proxy_config(s))


def _admin(
    s: Settings,
    store: Store,
    repos: Repos,
    runtime: Runtime,
    routes: RouteTable,
    instance: str,
    deployer: Deployer,
    env_vars: EnvVars,
    restarts: Mapping[str, int],
) -> Admin:
    """The verbs, with what they act on."""

    async def env_of(deployment: Deployment) -> dict[str, str]:
        return await env_vars.for_deployment(deployment.id)

    processes = Processes(
        store, runtime, routes, instance, env_of, s.stop_timeout, s.drain_timeout, restarts
    )
    return Admin(
        s,
        store,
        deployer,
        processes,
        ReleaseCommands(store, deployer),
        routes,
        lambda app: repos.create(app, s.deploy_branch),
        env_vars,
        repo_size=repos.size,
    )
