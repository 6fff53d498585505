"""nginx as the data plane (proxy_backend = "nginx"): the same route table, applied by reload.

Every change of the table is rendered to a new nginx.conf, checked with `nginx -t`, and
only then moved into place and applied with a graceful reload (SIGHUP): a config that fails
the check is never applied and the last good one keeps serving. If the whole table fails,
each app is checked alone and the ones that fail are left out, so one app never breaks the
others. Draining: after a reload, nginx's old workers finish their requests and exit; a
replaced release counts as drained once every worker that could still serve it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
import signal
import socket
from collections.abc import Mapping
from pathlib import Path

from rivetr_git.errors import RivetrError
from rivetr_git.proxy.config import ProxyConfig
from rivetr_git.proxy.nginx_config import render
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.proxy.stats import Snapshot
from rivetr_git.proxy.tls.files import prepare

log = logging.getLogger(__name__)


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def _accepting(pid: int) -> bool:
    """An old worker still takes new connections until it has retitled itself."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return _alive(pid) and b"shutting down" not in title


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# ProxyConfig fields nginx has no counterpart for, and the settings that set them.
NOT_IN_NGINX = {
    "upstream_connections": "proxy_upstream_connections",
    "max_headers": "proxy_max_headers",
    "websocket_idle_timeout": "websocket_idle_timeout",
    "access_log_max_bytes": "access_log_max_size",
    "access_log_backups": "access_log_backups",
}


def ignored_settings(config: ProxyConfig) -> list[str]:
    """The settings this config sets away from their defaults that nginx cannot apply."""
    default = ProxyConfig()
    return [
        name
        for field, name in NOT_IN_NGINX.items()
        if getattr(config, field) != getattr(default, field)
    ]


class NginxProxy:
    """Same face as ProxyServer (start, close, bound_port, wait_synced), run by nginx."""

    def __init__(
        self,
        routes: RouteTable,
        host: str,
        port: int,
        config: ProxyConfig,
        workers: int,
        state_dir: Path,
        drain_timeout: float = 30.0,
    ) -> None:
        self._routes = routes
        self._host = host
        self._config = config
        self._workers = max(1, workers)
        self._state = state_dir
        self._drain_timeout = drain_timeout
        self.bound_port = port
        self.https_port = config.https_port
        self._process: asyncio.subprocess.Process | None = None
        self._wanted = itertools.count(1)
        self._want = 0
        self._applied = 0
        self._applied_changed = asyncio.Event()
        self._reloader: asyncio.Task[None] | None = None
        self._live: Mapping[str, Upstream] = {}
        # Upstreams a reload took out of service, and the workers that may still serve them.
        self._retiring: dict[Upstream, set[int]] = {}

    @property
    def conf(self) -> Path:
        return self._state / "nginx.conf"

    def _listen(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.bound_port}"

    async def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise RivetrError(
                "proxy_backend is 'nginx' but nginx is not installed; "
                "apt-get install nginx, or set proxy_backend = 'builtin'"
            )
        self._nginx = nginx
        ignored = ignored_settings(self._config)
        if ignored:
            log.warning(
                "proxy_backend = nginx ignores %s: nginx has no such limit (its own "
                "defaults apply, and its access log is not rotated by size); use "
                "proxy_backend = builtin to have them",
                ", ".join(ignored),
            )
        for sub in ("", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self._state / sub).mkdir(parents=True, exist_ok=True)
        if self._config.access_log is not None:
            self._config.access_log.parent.mkdir(parents=True, exist_ok=True)
        if self.bound_port == 0:
            self.bound_port = self._free_port()
        if self._config.tls_dir is not None:
            prepare(self._config.tls_dir)
            if self.https_port == 0:
                self.https_port = self._free_port()
            self._config = dataclasses.replace(self._config, https_port=self.https_port)
        routes = self._routes.snapshot()
        text = await self._checked(routes)
        if text is None:
            raise RivetrError(f"nginx rejects the configuration; see {self._state}/error.log")
        self.conf.write_text(text)
        self._live = routes
        self._process = await asyncio.create_subprocess_exec(
            self._nginx,
            "-p",
            str(self._state),
            "-c",
            str(self.conf),
            "-e",
            str(self._state / "error.log"),
            stdin=asyncio.subprocess.DEVNULL,
        )
        if not await self._wait_listening(10):
            await self.close()
            raise RivetrError(f"nginx did not start; see {self._state}/error.log")
        self._routes.subscribe(self._changed)
        self._routes.add_drain_waiter(self._wait_drained)
        self._routes.add_sync_waiter(self.wait_synced)

    def _free_port(self) -> int:
        with socket.socket() as s:  # nginx cannot pick a port itself
            s.bind((self._host, 0))
            return int(s.getsockname()[1])

    def reload_tls(self) -> None:
        """Certificates were published: render and reload (wait_synced waits for it)."""
        self._changed(self._routes.snapshot())

    async def _wait_listening(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._process is not None and self._process.returncode is not None:
                return False
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(self._host, self.bound_port)
                writer.close()
                return True
            await asyncio.sleep(0.02)
        return False

    def _changed(self, routes: Mapping[str, Upstream]) -> None:
        self._want = next(self._wanted)
        if self._reloader is None or self._reloader.done():
            self._reloader = asyncio.get_running_loop().create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        while self._applied < self._want:
            target = self._want
            routes = self._routes.snapshot()
            text = await self._checked(routes)
            if text is not None:
                await self._apply(text, routes)
            self._applied = target
            self._applied_changed.set()
            self._applied_changed = asyncio.Event()

    async def _check(self, text: str) -> bool:
        candidate = self._state / "nginx.conf.new"
        candidate.write_text(text)
        proc = await asyncio.create_subprocess_exec(
            self._nginx,
            "-t",
            "-q",
            "-p",
            str(self._state),
            "-c",
            str(candidate),
            "-e",
            str(self._state / "error.log"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            log.error("nginx rejected a configuration: %s", err.decode(errors="replace").strip())
        return proc.returncode == 0

    async def _checked(self, routes: Mapping[str, Upstream]) -> str | None:
        """A config nginx accepts: the whole table, or the table without apps that fail."""
        text = self._render(routes)
        if await self._check(text):
            return text
        good = {}
        for host, upstream in routes.items():
            if await self._check(self._render({host: upstream})):
                good[host] = upstream
            else:
                log.error(
                    "app %s left out of nginx's configuration: nginx rejects it", upstream.app
                )
        text = self._render(good)
        return text if await self._check(text) else None

    def _render(self, routes: Mapping[str, Upstream]) -> str:
        return render(
            routes,
            self._routes.base_domain,
            self._listen(),
            self._config,
            self._workers,
            self._state,
            self._drain_timeout,
        )

    async def _apply(self, text: str, routes: Mapping[str, Upstream]) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        old_workers = _children(process.pid)
        (self._state / "nginx.conf.new").replace(self.conf)
        gone = {b for u in self._live.values() for b in u.backends()} - {
            b for u in routes.values() for b in u.backends()
        }
        for upstream in gone:
            self._retiring[upstream] = set(old_workers)
        self._live = routes
        process.send_signal(signal.SIGHUP)
        # Applied once a worker of the new generation runs and no old one takes new
        # connections any more.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline and (
            not (_children(process.pid) - old_workers)
            or any(_accepting(pid) for pid in old_workers)
        ):
            await asyncio.sleep(0.005)

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until the newest table is applied (or was refused); False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while self._applied < self._want:
                    await self._applied_changed.wait()
        except TimeoutError:
            return False
        return True

    async def _wait_drained(self, upstream: Upstream, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await self.wait_synced(timeout):
            return False
        pids = self._retiring.get(upstream, set())
        while any(_alive(pid) for pid in pids):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        self._retiring.pop(upstream, None)
        return True

    def proxy_stats(self) -> Snapshot:
        """Nothing: nginx's own counters are not read (its access log has them)."""
        return {}

    async def close(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGQUIT)  # graceful: workers finish what they serve
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            await process.wait()
