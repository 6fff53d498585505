"""Runs the proxy as N worker processes sharing one port, fed from the daemon's route table.

Each worker binds proxy_port with SO_REUSEPORT (the kernel spreads connections between
them) and runs on uvloop; the daemon itself stays on the default loop. Every change of the
route table is written to every worker's stdin at once, so a new release is routable in
all workers within milliseconds of the switch. Draining asks every worker and waits until
each has no request to the old release in flight: route updates and drain requests travel
on the same pipe, so a worker has always applied the switch before it is asked to drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rivetr_git.errors import RivetrError
from rivetr_git.proxy.config import ProxyConfig, config_to_json
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.proxy.stats import Snapshot, merge
from rivetr_git.proxy.tls.files import prepare

log = logging.getLogger(__name__)

_START_TIMEOUT = 30.0


class _Worker:
    """One worker process and the drains it still owes an answer to."""

    def __init__(self, index: int, process: asyncio.subprocess.Process) -> None:
        self.index = index
        self.process = process
        self.pending: dict[int, asyncio.Future[bool]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.applied = 0  # the last route table (by number) the worker said it applied
        self.stats: Snapshot = {}  # its request counts, as last reported

    def send(self, message: dict[str, Any]) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(json.dumps(message).encode() + b"\n")


class ProxyWorkers:
    """The same face as ProxyServer (start, close, bound_port), backed by N processes."""

    def __init__(
        self, routes: RouteTable, host: str, port: int, config: ProxyConfig, count: int
    ) -> None:
        self._routes = routes
        self._host = host
        self._port = port
        self._config = config
        self._count = count
        self._by_index: dict[int, _Worker] = {}
        self._starting: set[_Worker] = set()  # get table updates before they are ready
        self._drain_ids = itertools.count(1)
        self._table_no = 0
        self._synced = asyncio.Condition()
        self._placeholders: list[socket.socket] = []
        self._closing = False
        self.bound_port = port
        self.https_port = config.https_port
        self._retired_stats: Snapshot = {}  # counts of workers that exited

    def proxy_stats(self) -> Snapshot:
        """Requests, latencies and upstream errors per app, summed over the workers."""
        return merge([self._retired_stats, *(w.stats for w in self._workers)])

    @property
    def _workers(self) -> list[_Worker]:
        return list(self._by_index.values())

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    async def start(self) -> None:
        self.bound_port = self._hold(self._port, "proxy_port")
        if self._config.tls_dir is not None:
            prepare(self._config.tls_dir)  # once, so every worker has the same fallback
            self.https_port = self._hold(self._config.https_port, "https_port")
            self._config = dataclasses.replace(self._config, https_port=self.https_port)
        self._routes.subscribe(self._publish)
        self._routes.add_drain_waiter(self._wait_drained)
        self._routes.add_sync_waiter(self.wait_synced)
        try:
            await asyncio.gather(*(self._spawn(i) for i in range(self._count)))
        except BaseException:
            await self.close()
            raise

    def _hold(self, port: int, setting: str) -> int:
        """Bind (not listen on) the port, so every worker, and any restarted one, joins
        the same SO_REUSEPORT group on it, even when it was picked here (port 0)."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        placeholder = socket.socket(family, socket.SOCK_STREAM)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            placeholder.bind((self._host, port))
        except OSError as exc:
            placeholder.close()
            raise RivetrError(
                f"cannot listen on {self._host}:{port} for the proxy: "
                f"{exc.strerror}; choose another {setting}"
            ) from None
        self._placeholders.append(placeholder)
        return int(placeholder.getsockname()[1])

    def reload_tls(self) -> None:
        """Tell every worker to take the newly published certificates (wait_synced waits)."""
        self._table_no += 1
        for worker in (*self._workers, *self._starting):
            worker.send({"tls": self._table_no})

    def _start_line(self, index: int) -> dict[str, Any]:
        config = self._config
        if config.access_log is not None and self._count > 1:
            # One file per worker: size-based rotation cannot be shared between processes.
            log_path = config.access_log
            config = dataclasses.replace(
                config, access_log=log_path.with_name(f"{log_path.stem}.{index}{log_path.suffix}")
            )
        return {
            "host": self._host,
            "port": self.bound_port,
            "base_domain": self._routes.base_domain,
            "config": config_to_json(config),
        }

    async def _spawn(self, index: int) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rivetr_git.proxy.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(Path.cwd()),
        )
        worker = _Worker(index, process)
        worker.send(self._start_line(index))
        worker.send(self._routes_message(self._routes.snapshot()))
        self._starting.add(worker)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), _START_TIMEOUT)
        except TimeoutError:
            line = b""
        finally:
            self._starting.discard(worker)
        if not line or "ready" not in json.loads(line):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise RivetrError(
                f"proxy worker {index} did not start (exit status "
                f"{process.returncode}); see the log above"
            )
        worker.reader = asyncio.create_task(self._read(worker))
        self._by_index[index] = worker  # in the same step as leaving _starting
        return worker

    def _routes_message(self, routes: Mapping[str, Upstream]) -> dict[str, Any]:
        # Host by host: custom domains are hostnames too, not only APP.<base_domain>.
        return {
            "routes": [[host, dataclasses.asdict(u)] for host, u in routes.items()],
            "table": self._table_no,
        }

    def _publish(self, routes: Mapping[str, Upstream]) -> None:
        self._table_no += 1
        message = self._routes_message(routes)
        for worker in (*self._workers, *self._starting):
            worker.send(message)

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until every worker has applied the newest route table; False on timeout."""

        async def synced() -> None:
            async with self._synced:
                await self._synced.wait_for(
                    lambda: all(w.applied >= self._table_no for w in self._workers)
                )

        try:
            await asyncio.wait_for(synced(), timeout)
        except TimeoutError:
            return False
        return True

    async def _read(self, worker: _Worker) -> None:
        """Collect drain answers; restart the worker if it dies while the daemon runs."""
        stdout = worker.process.stdout
        assert stdout is not None
        while line := await stdout.readline():
            message = json.loads(line)
            if "stats" in message:
                worker.stats = message["stats"]
                continue
            if "applied" in message:
                worker.applied = message["applied"]
                async with self._synced:
                    self._synced.notify_all()
                continue
            future = worker.pending.pop(message.get("drained", 0), None)
            if future is not None and not future.done():
                future.set_result(bool(message["ok"]))
        await worker.process.wait()
        # Its counts stay in the sums (up to its last report, at most STATS_EVERY old).
        self._retired_stats = merge([self._retired_stats, worker.stats])
        worker.stats = {}
        if self._by_index.get(worker.index) is worker:
            del self._by_index[worker.index]
        for future in worker.pending.values():  # its connections died with it
            if not future.done():
                future.set_result(True)
        worker.pending.clear()
        if self._closing:
            return
        log.error(
            "proxy worker %d exited with status %s; starting a new one",
            worker.index,
            worker.process.returncode,
        )
        try:
            await self._spawn(worker.index)
        except RivetrError as exc:
            log.error("%s", exc)

    async def _wait_drained(self, upstream: Upstream, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        futures = []
        for worker in self._workers:
            drain_id = next(self._drain_ids)
            future: asyncio.Future[bool] = loop.create_future()
            worker.pending[drain_id] = future
            worker.send(
                {"drain": drain_id, "upstream": dataclasses.asdict(upstream), "timeout": timeout}
            )
            futures.append(future)
        try:
            # The workers time out on their own; the margin covers a stuck pipe.
            results = await asyncio.wait_for(asyncio.gather(*futures), timeout + 5)
        except TimeoutError:
            return False
        return all(results)

    async def close(self) -> None:
        self._closing = True
        for worker in self._workers:
            stdin = worker.process.stdin
            if stdin is not None:
                stdin.close()
        for worker in self._workers:
            try:
                await asyncio.wait_for(worker.process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            if worker.reader is not None:
                worker.reader.cancel()
        self._by_index.clear()
        for placeholder in self._placeholders:
            placeholder.close()
        self._placeholders.clear()
