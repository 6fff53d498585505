"""Proxy throughput and latency, side by side: direct, rivetr (1 and 2 workers), nginx.

One fast upstream on loopback (bench/proxy_upstream.py: aiohttp on uvloop, not a container),
then in one run, with wrk (-t1 -c32 by default):
  direct to the upstream | rivetr-git's proxy, 1 and 2 workers | nginx proxy_pass with
  upstream keepalive, same worker counts.
Prints req/s, p50/p99 and the ratios rivetr/nginx and rivetr/direct; then the p99 latency
an open-loop client sees at a fixed 1,000 req/s (direct vs through rivetr), how long a route
change takes to reach every worker, and the worker's RSS while 1 GiB goes up and 1 GiB
comes down through it. Needs `wrk`, `nginx` and `curl` (apt-get install wrk nginx curl).

    .venv/bin/python bench/proxy.py [--duration 5] [--connections 32] [--skip-transfer]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    BenchError,
    free_port,
    proc_status,
    stop_process,
    terminate_on_sigterm,
    wait_port,
)
from bench.proxy_rate import open_loop

HERE = Path(__file__).resolve().parent
HOST = "bench.localhost"
NGINX_CONF = """\
worker_processes {workers};
daemon off;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        client_max_body_size 0;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
}}
"""


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise SystemExit(f"cannot read wrk's latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(name: str, port: int, duration: int, connections: int) -> Result:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Host: {HOST}",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Latency Distribution" not in out:
        raise SystemExit(f"wrk against {name} printed no latencies:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if errors:
        print(f"  ({name}: {errors.group(0)})")
    return Result(name, rps, p50, p99)


@contextlib.contextmanager
def process(cmd: list[str], **kw: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        stop_process(proc)


@contextlib.contextmanager
def nginx(workdir: Path, upstream: int, workers: int) -> Iterator[int]:
    port = free_port()
    conf_dir = workdir / f"nginx{workers}"
    conf_dir.mkdir()
    (conf_dir / "nginx.conf").write_text(
        NGINX_CONF.format(workers=workers, dir=conf_dir, upstream=upstream, port=port)
    )
    with process(
        [
            "nginx",
            "-p",
            str(conf_dir),
            "-c",
            str(conf_dir / "nginx.conf"),
            "-e",
            str(conf_dir / "error.log"),
        ]
    ):
        try:
            wait_port(port)
        except BenchError as exc:  # this bench reports its failures as SystemExit
            raise SystemExit(str(exc)) from None
        yield port


@contextlib.contextmanager
def rivetr(
    workdir: Path, upstream: int, workers: int, backend: str = "builtin"
) -> Iterator[tuple[int, list[int]]]:
    """The real ProxyWorkers (or NginxProxy), run by a small supervisor process
    (bench/proxy_rivetr.py) as the daemon would."""
    with process(
        [
            sys.executable,
            str(HERE / "proxy_rivetr.py"),
            str(upstream),
            str(workers),
            str(workdir / f"rivetr-{backend}{workers}"),
            backend,
        ]
    ) as proc:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        median_ms, worst_ms = started["sync_ms"]
        print(
            f"  rivetr {backend} x{workers}: a route change is served by every worker after "
            f"{median_ms:.2f} ms (median of 20; worst {worst_ms:.2f} ms; target <= 100 ms)"
        )
        yield started["port"], started["pids"]


def transfer_memory(port: int, pid: int) -> tuple[int, int, int]:
    """RSS (kB) of one worker before, and at its peak during, 1 GiB up and 1 GiB down."""
    before = proc_status(pid)["VmRSS"]
    peak = before
    zeros = subprocess.Popen(["head", "-c", str(1 << 30), "/dev/zero"], stdout=subprocess.PIPE)
    up = subprocess.Popen(
        ["curl", "-sS", "-T", "-", "-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/sink"],
        stdin=zeros.stdout,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert zeros.stdout is not None
    zeros.stdout.close()  # curl holds the pipe now
    down = subprocess.Popen(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "-H",
            f"Host: {HOST}",
            f"http://127.0.0.1:{port}/big?mb=1024",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    while up.poll() is None or down.poll() is None:
        peak = max(peak, proc_status(pid)["VmRSS"])
        time.sleep(0.05)
    uploaded, downloaded = up.stdout.read(), down.stdout.read()  # type: ignore[union-attr]
    if uploaded.strip() != str(1 << 30) or downloaded.strip() != str(1 << 30):
        raise SystemExit(f"transfer incomplete: up {uploaded!r}, down {downloaded!r}")
    return before, peak, proc_status(pid)["VmRSS"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--skip-transfer", action="store_true")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y wrk nginx curl")
    terminate_on_sigterm()
    with (
        tempfile.TemporaryDirectory(prefix="rivetr-bench-proxy-") as tmp,
        process([sys.executable, str(HERE / "proxy_upstream.py")]) as upstream_proc,
    ):
        workdir = Path(tmp)
        assert upstream_proc.stdout is not None
        upstream = int(upstream_proc.stdout.readline())
        d, c = args.duration, args.connections
        wrk("warm-up", upstream, 1, c)
        results = {"direct": wrk("direct", upstream, d, c)}
        for workers in (1, 2):
            with rivetr(workdir, upstream, workers) as (port, pids):
                wrk("warm-up", port, 1, c)
                results[f"rivetr x{workers}"] = wrk(f"rivetr x{workers}", port, d, c)
                if workers == 1:
                    rate_direct = asyncio.run(open_loop(upstream, HOST, args.rate, 5))
                    rate_rivetr = asyncio.run(open_loop(port, HOST, args.rate, 5))
                    if not args.skip_transfer:
                        memory = transfer_memory(port, pids[0])
            with nginx(workdir, upstream, workers) as port:
                wrk("warm-up", port, 1, c)
                results[f"nginx x{workers}"] = wrk(f"nginx x{workers}", port, d, c)
            if workers == 1:
                with rivetr(workdir, upstream, workers, "nginx") as (port, _):
                    wrk("warm-up", port, 1, c)
                    results["rivetr-nginx x1"] = wrk("rivetr-nginx x1", port, d, c)
        direct = results["direct"].rps
        print(f"\nwrk -t1 -c{c} -d{d}s, Host: {HOST}, upstream aiohttp+uvloop on loopback")
        print(f"{'':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'/direct':>8} {'/nginx':>7}")
        for name, r in results.items():
            same = results.get(name.replace("rivetr-nginx", "nginx").replace("rivetr", "nginx"))
            vs_nginx = f"{r.rps / same.rps:7.2f}" if name.startswith("rivetr") and same else ""
            print(
                f"{name:16} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
                f"{r.rps / direct:8.2f} {vs_nginx:>7}"
            )
        print(
            "(rivetr-nginx: the nginx data plane rendered by rivetr, against the hand-written "
            "nginx.conf above; target within 10%)"
        )
        print(f"\nopen loop at {args.rate} req/s for 5 s (latency from the scheduled send):")
        for name, lat in (("direct", rate_direct), ("rivetr x1", rate_rivetr)):
            print(
                f"  {name:10} p50 {lat['p50']:6.2f} ms  p99 {lat['p99']:6.2f} ms  "
                f"({lat['done']} answered, {lat['errors']} errors)"
            )
        print(f"  added p99: {rate_rivetr['p99'] - rate_direct['p99']:.2f} ms (target <= 2 ms)")
        if not args.skip_transfer:
            before, peak, after = memory
            print(
                f"\n1 GiB up + 1 GiB down through rivetr x1: worker RSS {before / 1024:.1f} MB "
                f"before, peak {peak / 1024:.1f} MB, {after / 1024:.1f} MB after"
            )


if __name__ == "__main__":
    main()
