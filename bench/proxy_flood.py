"""Legitimate requests while one address floods the proxy with idle connections.

For each data plane (rivetr's own proxy, one worker; nginx as rivetr renders it), both
started as the daemon starts them (default settings, soft nofile raised to the hard limit):
  baseline: an open-loop client from 127.0.0.2 sends --rate requests/s for --seconds,
            each on a new connection (a fresh visitor), latency from the scheduled send;
  idle:     the same while another process holds --flood idle connections from 127.0.0.3
            (never sending a byte), opened once;
  churn:    the same, and the flooding process re-opens every connection the proxy closes
            (refused over the cap, or cut at the first-byte deadline) twice a second.
Prints success rate, p50 and p99 of each side by side, and the ratios against the baseline.
Bounded: about 2 x (3 x --seconds + 15) s.

    .venv/bin/python bench/proxy_flood.py [--flood 10000] [--rate 100] [--seconds 10]
                                          [--soft-nofile 1024]

--soft-nofile starts the proxies with that soft open-file limit (the hard one kept), the
common default of shells and service managers, to see what raising it at start-up does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import terminate_on_sigterm
from bench.proxy import HOST, process, rivetr

HERE = Path(__file__).resolve().parent
CLIENT = "127.0.0.2"
FLOODER = "127.0.0.3"
TIMEOUT = 2.0  # a legitimate request not answered by then counts as failed
_IP_BIND_ADDRESS_NO_PORT = 24


@dataclass
class Run:
    sent: int
    ok: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.ok / self.sent if self.sent else 0.0


async def _one(port: int, scheduled: float) -> float | None:
    """Latency in ms of one request on a new connection; None if it failed."""
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(CLIENT, 0)
            )
            try:
                writer.write(request)
                raw = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    if not raw.startswith(b"HTTP/1.1 200"):
        return None
    return (time.perf_counter() - scheduled) * 1000


async def legit(port: int, rate: int, seconds: float) -> Run:
    """Open loop: request i is sent at start + i/rate whatever happened to the others."""
    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(port, scheduled)))
    results = await asyncio.gather(*tasks)
    # A failed request counts in the percentiles at the timeout: failures are not fast.
    latencies = sorted(r if r is not None else TIMEOUT * 1000 for r in results)
    return Run(
        len(results),
        sum(r is not None for r in results),
        latencies[len(latencies) // 2],
        latencies[int(len(latencies) * 0.99)],
    )


def _open(port: int) -> socket.socket | None:
    sock = socket.socket()
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((FLOODER, 0))
        sock.connect_ex(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def _gone(sock: socket.socket) -> bool:
    """The proxy closed it (or refused it): anything readable, EOF or an error."""
    try:
        return sock.recv(4096, socket.MSG_PEEK) is not None
    except BlockingIOError:
        return False
    except OSError as exc:
        return exc.errno not in (errno.EAGAIN, errno.ENOTCONN)


def flood(port: int, count: int, seconds: float, reopen: bool) -> None:
    """Hold `count` idle connections for `seconds`; `reopen`: replace each one the proxy
    closes."""
    socks = [s for _ in range(count) if (s := _open(port)) is not None]
    print(json.dumps({"opened": len(socks)}), flush=True)
    reopened = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not reopen:
            continue
        for i, sock in enumerate(socks):
            if _gone(sock):
                sock.close()
                fresh = _open(port)
                if fresh is not None:
                    socks[i] = fresh
                    reopened += 1
    print(json.dumps({"reopened": reopened}), flush=True)
    for sock in socks:
        sock.close()


@contextlib.contextmanager
def flooding(port: int, count: int, seconds: float, reopen: bool) -> Iterator[dict[str, int]]:
    stats: dict[str, int] = {}
    with process(
        [
            sys.executable,
            __file__,
            "--flood-port",
            str(port),
            "--flood",
            str(count),
            "--seconds",
            str(seconds),
            *(["--reopen"] if reopen else []),
        ]
    ) as proc:
        assert proc.stdout is not None
        stats.update(json.loads(proc.stdout.readline()))
        time.sleep(1)  # the proxy takes in (or turns away) the first wave
        yield stats
        stats.update(json.loads(proc.stdout.readline() or "{}"))


def _set_soft_nofile(soft: int = 0) -> None:
    """This process's soft open-file limit: `soft`, or the hard limit when 0."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard) if soft else hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=10000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--soft-nofile",
        type=int,
        default=0,
        help="start the proxies with this soft open-file limit",
    )
    parser.add_argument("--flood-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reopen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _set_soft_nofile()
    if args.flood_port:
        return flood(args.flood_port, args.flood, args.seconds, args.reopen)
    if shutil.which("nginx") is None:
        raise SystemExit("nginx is missing: apt-get install -y nginx")
    terminate_on_sigterm()
    rows: list[tuple[str, str, Run, Run, dict[str, int]]] = []
    with (
        tempfile.TemporaryDirectory(prefix="rivetr-bench-flood-") as tmp,
        process([sys.executable, str(HERE / "proxy_upstream.py")]) as upstream_proc,
    ):
        assert upstream_proc.stdout is not None
        upstream = int(upstream_proc.stdout.readline())
        for backend in ("builtin", "nginx"):
            _set_soft_nofile(args.soft_nofile)  # inherited by the proxy's processes
            with rivetr(Path(tmp), upstream, 1, backend) as (port, _):
                _set_soft_nofile()
                asyncio.run(legit(port, args.rate, 1))  # warm-up
                base = asyncio.run(legit(port, args.rate, args.seconds))
                rows.append((backend, "baseline", base, base, {}))
                for mode in ("idle", "churn"):
                    with flooding(port, args.flood, args.seconds + 2, mode == "churn") as stats:
                        under = asyncio.run(legit(port, args.rate, args.seconds))
                    rows.append((backend, mode, base, under, stats))
                    time.sleep(1)  # the flood's connections are gone before the next run
    print(
        f"\n{args.rate} req/s for {args.seconds:g} s from {CLIENT}, each on a new connection "
        f"(failed = no 200 within {TIMEOUT:g} s, counted at {TIMEOUT:g} s); flood: "
        f"{args.flood} idle connections from {FLOODER} (churn: re-opened when closed)"
        + (f"; proxies started with soft nofile {args.soft_nofile}" if args.soft_nofile else "")
    )
    print(
        f"{'':8} {'flood':8} {'ok':>7} {'p50':>8} {'p99':>8} | {'ok/base':>7} "
        f"{'p99/base':>8} | flood opened/re-opened"
    )
    for backend, mode, base, run, stats in rows:
        flood_stats = f"{stats['opened']}/{stats.get('reopened', 0)}" if stats else "-"
        print(
            f"{backend:8} {mode:8} {run.rate:7.1%} {run.p50_ms:6.1f}ms {run.p99_ms:6.1f}ms | "
            f"{run.rate / base.rate if base.rate else 0:7.2f} {run.p99_ms / base.p99_ms:8.2f} | "
            f"{flood_stats}"
        )


if __name__ == "__main__":
    main()
