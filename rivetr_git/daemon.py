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
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from rivetr_git import validate
from rivetr_git.admin.certs import CertVerbs
from rivetr_git.admin.cron_verbs import CronVerbs
from rivetr_git.admin.git_verbs import GitVerbs
from rivetr_git.admin.notify_verbs import NotifyVerbs
from rivetr_git.admin.service import Admin, Caller, Session
from rivetr_git.admin.service_verbs import ServiceParts
from rivetr_git.api.metrics import Metrics
from rivetr_git.api.server import ApiServer
from rivetr_git.certificates.manager import Certificates
from rivetr_git.certificates.renewal import Renewal
from rivetr_git.errors import RivetrError, RuntimeUnavailable
from rivetr_git.models import App, Deployment
from rivetr_git.notify import Notifier
from rivetr_git.notify.channels import Channel
from rivetr_git.pipeline.after_switch.monitor import Monitor
from rivetr_git.pipeline.consoles import Consoles
from rivetr_git.pipeline.cron import Scheduler, from_store, utc_now
from rivetr_git.pipeline.cron_jobs import CronJob
from rivetr_git.pipeline.cron_log import CronLog
from rivetr_git.pipeline.deployer import Deployer
from rivetr_git.pipeline.git_source import GitSources
from rivetr_git.pipeline.labels import instance_id, network_name
from rivetr_git.pipeline.mounts import Storage
from rivetr_git.pipeline.processes import Processes
from rivetr_git.pipeline.push import PushHandler
from rivetr_git.pipeline.reconcile import reconcile
from rivetr_git.pipeline.releases import ReleaseCommands
from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.fdlimit import raise_nofile_limit
from rivetr_git.proxy.nginx import NginxProxy
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.proxy.server import ProxyServer
from rivetr_git.proxy.workers import ProxyWorkers
from rivetr_git.receiver.hook_socket import HookSocket
from rivetr_git.receiver.server import Receiver
from rivetr_git.runtime.base import OnOutput, Runtime
from rivetr_git.runtime.docker import DockerRuntime
from rivetr_git.runtime.podman import PodmanRuntime
from rivetr_git.secrets.channels import Channels
from rivetr_git.secrets.crypto import Cipher, open_master_key
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.secrets.git_secrets import GitSecrets
from rivetr_git.secrets.master_key import lock_master_key
from rivetr_git.services.backups import Backups, run_schedule
from rivetr_git.services.manager import Services
from rivetr_git.services.monitor import ServiceMonitor
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
        tls_dir=s.data_dir / "tls" if s.https_port else None,
        https_port=s.https_port,
    )


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
        parts = await _services(s, store, runtime, cipher, instance)  # before the apps need them
        await reconcile(s, store, repos, runtime, routes, instance)
        notifier, notify_verbs = _notifier(s, store, cipher)
        closers.append(notifier)
        env_vars = EnvVars(store, cipher)
        deployer = Deployer(s, store, repos, runtime, routes, instance, notifier, env_vars)
        watcher = Monitor(s, store, runtime, routes, instance, notifier, deployer.is_watched)
        watcher.check_live(deployer.health_in_force)
        monitor = asyncio.create_task(watcher.run())
        proxy = _proxy(s, routes)
        certs, renewal = _certificates(s, store, cipher, routes, proxy, notifier)
        processes = _processes(s, store, runtime, routes, instance, env_vars, watcher.restarts)
        scheduler = _scheduler(s, store, repos, processes)
        sources = GitSources(s, store, repos, GitSecrets(store, cipher), deployer, notifier)
        admin = _admin(
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
        api = _api(s, store, admin, sources, deployer, watcher, proxy)
        pushes = PushHandler(deployer, s.deploy_branch)
        hooks = HookSocket(s.data_dir / "run" / "hooks.sock", pushes.handle, _local(admin))
        receiver = Receiver(s, store, repos, hooks, install_hooks(s.data_dir), admin)
        await hooks.start()
        closers.append(hooks)
        await proxy.start()
        closers.append(proxy)
        deployer.set_public_port(proxy.bound_port)
        tasks = [monitor, *_service_tasks(store, parts)]
        if certs is not None and renewal is not None:
            await certs.publish(force=True)  # what is stored serves from the start
            tasks.append(asyncio.create_task(renewal.run()))
        await receiver.start()
        closers.append(receiver)
        await api.start()
        closers.append(api)
        closers.append(deployer)
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


def _local(admin: Admin) -> Callable[[list[str], Session], Awaitable[int]]:
    """Verbs from the local CLI (the hook socket is 0600): run as the server's own admin."""

    async def local_command(argv: list[str], session: Session) -> int:
        return await admin.run(argv, Caller(None), session)

    return local_command


def _api(
    s: Settings,
    store: Store,
    admin: Admin,
    sources: GitSources,
    deployer: Deployer,
    watcher: Monitor,
    proxy: ProxyServer | ProxyWorkers | NginxProxy,
) -> ApiServer:
    """The HTTP edge, with the metrics the deployer, the crash monitor and the proxy feed."""
    metrics = Metrics(store, watcher.restarts_by_app, proxy.proxy_stats)
    deployer.observe(metrics.deploy_finished)
    return ApiServer(s, store, admin, sources, metrics, deployer.app_url, deployer.job)


def _processes(
    s: Settings,
    store: Store,
    runtime: Runtime,
    routes: RouteTable,
    instance: str,
    env_vars: EnvVars,
    restarts: Mapping[str, int],
) -> Processes:
    async def env_of(deployment: Deployment) -> dict[str, str]:
        return await env_vars.for_deployment(deployment.id)

    processes = Processes(
        store, runtime, routes, instance, env_of, s.stop_timeout, s.drain_timeout, restarts
    )
    processes.storage_root = s.storage_root
    return processes


def _scheduler(s: Settings, store: Store, repos: Repos, processes: Processes) -> Scheduler:
    """`[[cron]]` jobs of the live releases, each run as `run` runs a command."""

    async def run_job(app: str, job: CronJob, on_output: OnOutput) -> int:
        return await processes.run(await store.get_app(app), list(job.command), on_output)

    live, jobs_of = from_store(store, repos)
    return Scheduler(live, jobs_of, run_job, CronLog(s.data_dir / "cron", utc_now))


def _notifier(s: Settings, store: Store, cipher: Cipher) -> tuple[Notifier, NotifyVerbs]:
    """Events: the webhooks of the settings, and the channels of notify:add."""
    notifier = Notifier(s)
    channels = Channels(store, cipher)

    async def source(app: App) -> list[Channel]:
        return [Channel(*row) for row in await channels.list(app, with_server=True)]

    notifier.use_channels(source)
    return notifier, NotifyVerbs(store, channels, notifier)


def _admin(
    s: Settings,
    store: Store,
    repos: Repos,
    runtime: Runtime,
    routes: RouteTable,
    instance: str,
    deployer: Deployer,
    processes: Processes,
    env_vars: EnvVars,
    scheduler: Scheduler,
    certs: CertVerbs,
    services: ServiceParts,
    git: GitVerbs,
    notify: NotifyVerbs,
) -> Admin:
    """The verbs, with what they act on."""
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
        certs=certs,
        cron=CronVerbs(scheduler),
        consoles=Consoles(runtime, processes),
        storage=Storage(store, runtime, instance, s.storage_root),
        services=services,
        git=git,
        notify=notify,
    )


def _service_tasks(store: Store, parts: ServiceParts) -> list[asyncio.Task[None]]:
    """The backing services' scheduled backups and crash monitor."""
    tasks = [asyncio.create_task(run_schedule(store, parts.backups))]
    if parts.monitor is not None:
        tasks.append(asyncio.create_task(parts.monitor.run()))
    return tasks


async def _services(
    s: Settings, store: Store, runtime: Runtime, cipher: Cipher, instance: str
) -> ServiceParts:
    """Backing services, their containers running again, their monitor and backups."""
    services = Services(
        s, store, runtime, cipher, instance, lambda app: network_name(instance, app)
    )
    await services.start_all()
    backups = Backups(store, runtime, services, s.data_dir / "backups")
    return ServiceParts(services, backups, ServiceMonitor(s, store, runtime, services))


def _certificates(
    s: Settings,
    store: Store,
    cipher: Cipher,
    routes: RouteTable,
    proxy: ProxyServer | ProxyWorkers | NginxProxy,
    notifier: Notifier,
) -> tuple[Certificates | None, Renewal | None]:
    """HTTPS certificates and their renewal (None, None with https_port 0)."""
    if not s.https_port:
        return None, None

    async def reload_tls() -> None:
        proxy.reload_tls()
        await proxy.wait_synced(10)

    certs = Certificates(s, store, cipher, routes, s.data_dir / "tls", reload_tls, notifier)
    return certs, Renewal(certs, store)
