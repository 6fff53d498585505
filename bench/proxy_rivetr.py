"""bench/proxy.py's rivetr side: the real ProxyWorkers, supervised as the daemon would.

Usage: proxy_rivetr.py UPSTREAM_PORT WORKERS WORKDIR [builtin|nginx] [tls]. Routes
bench.localhost to the upstream with the default settings (access log on), times how long
20 route changes take to be applied by every worker (or nginx reload), prints {"port",
"https_port", "pids", "sync_ms"} and serves until SIGTERM. With `tls`, HTTPS is on too, on a
free port, from the TLS state dir WORKDIR/../tls (shared, so runs serve the same
certificates).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rivetr_git.proxy.fdlimit import raise_nofile_limit
from rivetr_git.proxy.nginx import NginxProxy
from rivetr_git.proxy.routes import RouteTable, Upstream
from rivetr_git.proxy.workers import ProxyWorkers
from rivetr_git.settings import Settings
from rivetr_git.wiring import proxy_config


async def serve_rivetr(
    upstream_port: int, count: int, workdir: Path, backend: str, tls: bool = False
) -> None:
    raise_nofile_limit()  # as the daemon does at start-up
    routes = RouteTable("localhost")
    routes.set(Upstream(app="bench", host="127.0.0.1", port=upstream_port, deployment_id=1))
    config = proxy_config(Settings(data_dir=workdir, https_port=0))
    if tls:
        config = dataclasses.replace(config, tls_dir=workdir.parent / "tls", https_port=0)
    workers: ProxyWorkers | NginxProxy
    if backend == "nginx":
        workers = NginxProxy(routes, "127.0.0.1", 0, config, count, workdir / "nginx")
    else:
        workers = ProxyWorkers(routes, "127.0.0.1", 0, config, count)
    await workers.start()
    sync_ms = []
    for i in range(20):
        started = time.perf_counter()
        routes.set(Upstream(app="probe", host="127.0.0.1", port=upstream_port, deployment_id=i + 2))
        if not await workers.wait_synced(5):
            raise SystemExit("a worker did not apply a route change within 5 s")
        sync_ms.append((time.perf_counter() - started) * 1000)
    pids = workers.pids if isinstance(workers, ProxyWorkers) else []
    print(
        json.dumps(
            {
                "port": workers.bound_port,
                "https_port": workers.https_port,
                "pids": pids,
                "sync_ms": [statistics.median(sync_ms), max(sync_ms)],
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await workers.close()


if __name__ == "__main__":
    asyncio.run(
        serve_rivetr(
            int(sys.argv[1]),
            int(sys.argv[2]),
            Path(sys.argv[3]),
            sys.argv[4] if len(sys.argv) > 4 else "builtin",
            len(sys.argv) > 5 and sys.argv[5] == "tls",
        )
    )
