"""The composition root: builds every component, reconciles state, runs until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
from pathlib import Path

from rivetr_git.errors import RivetrError
from rivetr_git.limits import parse_size
from rivetr_git.models import IN_FLIGHT, Status
from rivetr_git.notify import Notifier
from rivetr_git.pipeline.deployer import Deployer
from rivetr_git.pipeline.labels import instance_id, labels
from rivetr_git.pipeline.monitor import Monitor
from rivetr_git.pipeline.push import PushHandler, Write
from rivetr_git.pipeline.releases import ReleaseCommands
from rivetr_git.proxy.config import ProxyConfig, parse_networks
from rivetr_git.proxy.nginx import NginxProxy
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.proxy.server import ProxyServer
from rivetr_git.proxy.workers import ProxyWorkers
from rivetr_git.receiver.commands import AdminCommand
from rivetr_git.receiver.hook_socket import HookSocket
from rivetr_git.receiver.server import Receiver
from rivetr_git.repos import Repos
from rivetr_git.runtime.base import LABEL_DEPLOYMENT, Runtime
from rivetr_git.runtime.docker import DockerRuntime
from rivetr_git.settings import Settings
from rivetr_git.store import Store

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
        (target / hook).chmod(0o755)
    return target


async def reconcile(
    settings: Settings, store: Store, repos: Repos, runtime: Runtime, routes: RouteTable,
    instance: str,
) -> None:
    """Make the world match the database after a start or a crash.

    In-flight deployments were interrupted: mark them failed and remove what they left.
    Running releases get their routes back (restarting a stopped container if needed).
    Containers of this instance that belong to no live release are removed.
    """
    for d in await store.deployments_with_status(IN_FLIGHT):
        await store.set_status(d.id, Status.FAILED, error_message="interrupted by restart")
        for c in await runtime.list_containers(labels(instance, d.app_name, d.id)):
            await runtime.remove(c.id)
        if d.image:
            await runtime.remove_image(d.image)
        app = await store.get_app(d.app_name)
        current = await store.current_deployment(app)
        await repos.reset_branch(d.app_name, app.deploy_branch or settings.deploy_branch,
                                 expected=d.commit_sha, to=current.commit_sha if current else None)
    live: dict[str, int] = {}
    upstreams: list[Upstream] = []
    crashed = {a.name for a in await store.list_apps() if a.crashed_reason}
    for d in await store.deployments_with_status([Status.RUNNING]):
        port = d.host_port
        info = await runtime.inspect(d.container_id) if d.container_id else None
        if d.app_name in crashed:
            if info is not None:
                live[info.id] = d.id  # kept for a look at its logs; not restarted
            if port:
                upstreams.append(Upstream(app=d.app_name, host="127.0.0.1", port=port,
                                          deployment_id=d.id, crashed=True))
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
            log.warning("container of %s (deployment #%s) is gone; it answers 502 until the "
                        "next deploy", d.app_name, d.id)
        if port:
            upstreams.append(Upstream(app=d.app_name, host="127.0.0.1", port=port,
                                      deployment_id=d.id))
    routes.replace(upstreams)
    for c in await runtime.list_containers(labels(instance)):
        if c.id not in live and c.labels.get(LABEL_DEPLOYMENT):
            log.info("removing leftover container %s", c.name)
            await runtime.remove(c.id)
    tmp = settings.data_dir / "tmp"
    if tmp.is_dir():
        await asyncio.to_thread(shutil.rmtree, tmp, True)


def proxy_config(s: Settings) -> ProxyConfig:
    """The data plane's knobs, from the settings."""
    access_log = s.data_dir / s.access_log if s.access_log else None
    return ProxyConfig(
        header_timeout=s.proxy_header_timeout, keepalive_timeout=s.proxy_keepalive_timeout,
        connect_timeout=s.proxy_connect_timeout, read_timeout=s.proxy_read_timeout,
        upstream_connections=s.proxy_upstream_connections,
        max_body_size=parse_size(s.max_body_size) if s.max_body_size else 0,
        max_header_size=s.proxy_max_header_size, max_headers=s.proxy_max_headers,
        websocket_idle_timeout=s.websocket_idle_timeout,
        trusted_proxies=parse_networks(s.trusted_proxies), access_log=access_log,
        access_log_max_bytes=parse_size(s.access_log_max_size),
        access_log_backups=s.access_log_backups,
    )


class Daemon:
    """Everything `rivetr-git serve` runs, wired together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run(self, stop: asyncio.Event | None = None) -> None:
        s = self.settings
        stop = stop or asyncio.Event()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        store = await Store.open(s.db_path)
        runtime: Runtime | None = None
        closers: list[object] = []
        try:
            runtime = await DockerRuntime.connect()
            instance = instance_id(s.data_dir)
            repos = Repos(s.repos_dir)
            routes = RouteTable(s.base_domain)
            await reconcile(s, store, repos, runtime, routes, instance)
            notifier = Notifier(s)
            closers.append(notifier)
            deployer = Deployer(s, store, repos, runtime, routes, instance, notifier)
            monitor = asyncio.create_task(Monitor(
                s, store, runtime, routes, instance, notifier, deployer.is_watched).run())
            pushes = PushHandler(deployer, s.deploy_branch)
            releases = ReleaseCommands(store, deployer)

            async def local_command(command: AdminCommand, write: Write) -> int:
                app = await store.get_app(command.app)
                return await releases.run(command.verb, app, command.release, "local", write)

            hooks = HookSocket(s.data_dir / "run" / "hooks.sock", pushes.handle, local_command)
            proxy: ProxyServer | ProxyWorkers | NginxProxy
            if s.proxy_backend == "nginx":
                proxy = NginxProxy(routes, s.proxy_host, s.proxy_port, proxy_config(s),
                                   s.proxy_workers or 1, s.data_dir / "nginx", s.drain_timeout)
            elif s.proxy_workers:
                proxy = ProxyWorkers(routes, s.proxy_host, s.proxy_port, proxy_config(s),
                                     s.proxy_workers)
            else:
                proxy = ProxyServer(routes, s.proxy_host, s.proxy_port, proxy_config(s))
            receiver = Receiver(s, store, repos, hooks, install_hooks(s.data_dir),
                                releases)
            await hooks.start()
            closers.append(hooks)
            await proxy.start()
            closers.append(proxy)
            deployer.set_public_port(proxy.bound_port)
            await receiver.start()
            closers.append(receiver)
            closers.append(deployer)
            self._write_state(receiver.bound_port, proxy.bound_port)
            log.info("rivetr-git ready: ssh on %s:%s, proxy on %s:%s, %d app(s) routed",
                     s.ssh_host, receiver.bound_port, s.proxy_host, proxy.bound_port, len(routes))
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            await stop.wait()
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

    def _write_state(self, ssh_port: int, proxy_port: int) -> None:
        """Tell local tools (and tests) that the daemon is up and where."""
        state = {"pid": os.getpid(), "ssh_port": ssh_port, "proxy_port": proxy_port}
        path = self.settings.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)
