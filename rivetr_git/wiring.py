"""How the daemon builds each part of the server from the settings (helpers of the
composition root, `daemon.py`, which alone calls them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

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
from rivetr_git.pipeline.labels import network_name
from rivetr_git.pipeline.mounts import Storage
from rivetr_git.pipeline.processes import Processes
from rivetr_git.pipeline.releases import ReleaseCommands
from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.nginx import NginxProxy
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.proxy.server import ProxyServer
from rivetr_git.proxy.workers import ProxyWorkers
from rivetr_git.runtime.base import OnOutput, Runtime
from rivetr_git.secrets.channels import Channels
from rivetr_git.secrets.crypto import Cipher
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.services.backups import Backups, run_schedule
from rivetr_git.services.manager import Services
from rivetr_git.services.monitor import ServiceMonitor
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos


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


def make_proxy(s: Settings, routes: RouteTable) -> ProxyServer | ProxyWorkers | NginxProxy:
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


def local_verbs(admin: Admin) -> Callable[[list[str], Session], Awaitable[int]]:
    """Verbs from the local CLI (the hook socket is 0600): run as the server's own admin."""

    async def local_command(argv: list[str], session: Session) -> int:
        return await admin.run(argv, Caller(None), session)

    return local_command


def make_api(
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


def make_processes(
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


def make_scheduler(s: Settings, store: Store, repos: Repos, processes: Processes) -> Scheduler:
    """`[[cron]]` jobs of the live releases, each run as `run` runs a command."""

    async def run_job(app: str, job: CronJob, on_output: OnOutput) -> int:
        return await processes.run(await store.get_app(app), list(job.command), on_output)

    live, jobs_of = from_store(store, repos)
    return Scheduler(live, jobs_of, run_job, CronLog(s.data_dir / "cron", utc_now))


def make_notifier(s: Settings, store: Store, cipher: Cipher) -> tuple[Notifier, NotifyVerbs]:
    """Events: the webhooks of the settings, and the channels of notify:add."""
    notifier = Notifier(s)
    channels = Channels(store, cipher)

    async def source(app: App) -> list[Channel]:
        return [Channel(*row) for row in await channels.list(app, with_server=True)]

    notifier.use_channels(source)
    return notifier, NotifyVerbs(store, channels, notifier)


def make_admin(
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


def service_tasks(store: Store, parts: ServiceParts) -> list[asyncio.Task[None]]:
    """The backing services' scheduled backups and crash monitor."""
    tasks = [asyncio.create_task(run_schedule(store, parts.backups))]
    if parts.monitor is not None:
        tasks.append(asyncio.create_task(parts.monitor.run()))
    return tasks


async def start_services(
    s: Settings, store: Store, runtime: Runtime, cipher: Cipher, instance: str
) -> ServiceParts:
    """Backing services, their containers running again, their monitor and backups."""
    services = Services(
        s, store, runtime, cipher, instance, lambda app: network_name(instance, app)
    )
    await services.start_all()
    backups = Backups(store, runtime, services, s.data_dir / "backups")
    return ServiceParts(services, backups, ServiceMonitor(s, store, runtime, services))


def make_certificates(
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
