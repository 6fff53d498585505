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
from pathlib import Path

from rivetr_git import validate
from rivetr_git.admin.certs import CertVerbs
from rivetr_git.admin.git_verbs import GitVerbs
from rivetr_git.errors import RivetrError, RuntimeUnavailable
from rivetr_git.pipeline.after_switch.monitor import Monitor
from rivetr_git.pipeline.deployer import Deployer
from rivetr_git.pipeline.git_source import GitSources
from rivetr_git.pipeline.labels import instance_id
from rivetr_git.pipeline.push import PushHandler
from rivetr_git.pipeline.reconcile import reconcile
from rivetr_git.proxy.fdlimit import raise_nofile_limit
from rivetr_git.proxy.nginx import NginxProxy
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.proxy.server import ProxyServer
from rivetr_git.proxy.workers import ProxyWorkers
from rivetr_git.receiver.hook_socket import HookSocket
from rivetr_git.receiver.server import Receiver
from rivetr_git.runtime.base import Runtime
from rivetr_git.runtime.docker import DockerRuntime
from rivetr_git.runtime.podman import PodmanRuntime
from rivetr_git.secrets.crypto import Cipher, open_master_key
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.secrets.git_secrets import GitSecrets
from rivetr_git.secrets.master_key import lock_master_key
from rivetr_git.settings import Settings
from rivetr_git.store.data_dir import make_private
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos
from rivetr_git.wiring import (
    local_verbs,
    make_admin,
    make_api,
    make_certificates,
    make_notifier,
    make_processes,
    make_proxy,
    make_scheduler,
    service_tasks,
    start_services,
)

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


async def connect_runtime(settings: Settings) -> Runtime:
    """The container runtime the `runtime` setting asks for, with its app network range."""
    runtime = await _connect_runtime(settings)
    if settings.app_networks:
        runtime.network_pool = ipaddress.IPv4Network(settings.app_networks)
    if settings.log_max_size:  # json-file caps: a chatty app cannot fill the disk
        size = validate.size(settings.log_max_size)
        runtime.log_options = {"max-size": str(size), "max-file": str(settings.log_max_files)}
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
            cipher = open_master_key(s.data_dir, await store.any_env_value())
            runtime = await connect_runtime(s)
            tasks = await self._start(store, cipher, runtime, closers)
            await _until(stop)
            log.info("shutting down; app containers keep running")
            for task in tasks:
                task.cancel()
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
        self, store: Store, cipher: Cipher, runtime: Runtime, closers: list[object]
    ) -> list[asyncio.Task[None]]:
        """Reconcile, then start every part; each started part goes on `closers`. Returns
        the background tasks (crash monitor, certificate renewal)."""
        s = self.settings
        instance = instance_id(s.data_dir)
        repos = Repos(s.repos_dir)
        routes = RouteTable(s.base_domain)
        parts = await start_services(s, store, runtime, cipher, instance)  # before the apps
        await reconcile(s, store, repos, runtime, routes, instance)
        notifier, notify_verbs = make_notifier(s, store, cipher)
        closers.append(notifier)
        env_vars = EnvVars(store, cipher)
        deployer = Deployer(s, store, repos, runtime, routes, instance, notifier, env_vars)
        watcher = Monitor(s, store, runtime, routes, instance, notifier, deployer.is_watched)
        watcher.check_live(deployer.health_in_force)
        monitor = asyncio.create_task(watcher.run())
        proxy = make_proxy(s, routes)
        certs, renewal = make_certificates(s, store, cipher, routes, proxy, notifier)
        processes = make_processes(s, store, runtime, routes, instance, env_vars, watcher.restarts)
        scheduler = make_scheduler(s, store, repos, processes)
        sources = GitSources(s, store, repos, GitSecrets(store, cipher), deployer, notifier)
        admin = make_admin(
            s,
            store,
            repos,
            runtime,
            routes,
            instance,
            deployer,
            processes,
            env_vars,
            scheduler,
            CertVerbs(certs, renewal, s.https_redirect),
            parts,
            GitVerbs(s, store, sources),
            notify_verbs,
        )
        api = make_api(s, store, admin, sources, deployer, watcher, proxy)
        pushes = PushHandler(deployer, s.deploy_branch)
        hooks = HookSocket(s.data_dir / "run" / "hooks.sock", pushes.handle, local_verbs(admin))
        receiver = Receiver(s, store, repos, hooks, install_hooks(s.data_dir), admin)
        await hooks.start()
        closers.append(hooks)
        await proxy.start()
        closers.append(proxy)
        deployer.set_public_port(proxy.bound_port)
        tasks = [monitor, *service_tasks(store, parts)]
        if certs is not None and renewal is not None:
            await certs.publish(force=True)  # what is stored serves from the start
            tasks.append(asyncio.create_task(renewal.run()))
        await receiver.start()
        closers.append(receiver)
        await api.start()
        closers += [api, deployer]
        scheduler.start()
        closers.append(scheduler)
        self._ready(receiver, proxy, api.bound_port, len(routes), runtime.name)
        return tasks

    def _ready(
        self,
        receiver: Receiver,
        proxy: ProxyServer | ProxyWorkers | NginxProxy,
        api_port: int,
        routed: int,
        runtime: str,
    ) -> None:
        s = self.settings
        https = proxy.https_port if s.https_port else 0
        self._write_state(receiver.bound_port, proxy.bound_port, https, api_port)
        log.info(
            "rivetr-git ready: ssh on %s:%s, proxy on %s:%s (https %s), api on %s:%s, "
            "%d app(s) routed, runtime %s",
            s.ssh_host,
            receiver.bound_port,
            s.proxy_host,
            proxy.bound_port,
            https or "off",
            s.api_host,
            api_port,
            routed,
            runtime,
        )

    def _write_state(self, ssh_port: int, proxy_port: int, https_port: int, api_port: int) -> None:
        """Tell local tools (and tests) that the daemon is up and where."""
        state = {
            "pid": os.getpid(),
            "ssh_port": ssh_port,
            "proxy_port": proxy_port,
            "https_port": https_port,
            "api_port": api_port,
        }
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
