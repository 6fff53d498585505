"""HTTPS through the proxy, side by side: rivetr's built-in data plane against nginx.

Both serve the same certificate (a self-signed ECDSA P-256 one, published into one shared
TLS state dir as the daemon does) in front of the same upstream (bench/proxy_upstream.py,
aiohttp on uvloop, loopback); nginx is rivetr's own nginx data plane (the config the
daemon renders). In one run:
  - keep-alive HTTPS requests per second (wrk -t1 -c32 over TLS), 1 worker each;
  - new TLS handshakes per second (`openssl s_time -new`, full handshakes, no resumption);
  - the p99 an open-loop client sees at a fixed 1,000 req/s over TLS through the built-in
    proxy, against plain HTTP straight to the upstream (the added p99).
Targets (issue 12): built-in >= 0.5x nginx on keep-alive requests; added p99 <= 3 ms.
Needs `wrk`, `nginx` and `openssl` (apt-get install wrk nginx openssl).

    .venv/bin/python bench/https.py [--duration 5] [--connections 32] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import terminate_on_sigterm
from bench.proxy import HOST, Result, _ms, process
from bench.proxy_rate import open_loop
from rivetr_git.proxy.tls import files
from rivetr_git.proxy.tls.pem import self_signed

HERE = Path(__file__).resolve().parent


def wrk_tls(name: str, port: int, duration: int, connections: int) -> Result:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Host: {HOST}",
            f"https://127.0.0.1:{port}/",
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


def handshakes(port: int, seconds: int) -> float:
    """Full TLS handshakes per second (wall clock) by `openssl s_time -new`."""
    started = time.monotonic()
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    elapsed = time.monotonic() - started
    match = re.search(r"(\d+) connections in [\d.]+s", out)
    if match is None:
        raise SystemExit(f"openssl s_time printed no count:\n{out}")
    return int(match.group(1)) / elapsed


async def _tls_connection(
    port: int,
    request: bytes,
    due: asyncio.Queue[float | None],
    latencies: list[float],
    errors: list[int],
) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=HOST
    )
    try:
        while (scheduled := await due.get()) is not None:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
            latencies.append((time.perf_counter() - scheduled) * 1000)
    finally:
        writer.close()


async def tls_open_loop(
    port: int, rate: int, seconds: float, connections: int = 16
) -> dict[str, float]:
    """bench/proxy_rate.open_loop over TLS (connections are set up before the clock runs)."""
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    due: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    errors: list[int] = []
    workers = [
        asyncio.create_task(_tls_connection(port, request, due, latencies, errors))
        for _ in range(connections)
    ]
    await asyncio.sleep(0.5)  # the handshakes are not what this measures
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(scheduled)
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "done": len(latencies),
        "errors": len(errors),
    }


@contextlib.contextmanager
def rivetr(workdir: Path, upstream: int, backend: str) -> Iterator[int]:
    """The real ProxyWorkers or NginxProxy with HTTPS on (bench/proxy_rivetr.py)."""
    with process(
        [
            sys.executable,
            str(HERE / "proxy_rivetr.py"),
            str(upstream),
            "1",
            str(workdir / f"rivetr-{backend}"),
            backend,
            "tls",
        ]
    ) as proc:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        yield int(started["https_port"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y wrk nginx openssl")
    terminate_on_sigterm()
    d, c = args.duration, args.connections
    keepalive: dict[str, Result] = {}
    per_second: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="rivetr-bench-https-") as tmp,
        process([sys.executable, str(HERE / "proxy_upstream.py")]) as upstream_proc,
    ):
        workdir = Path(tmp)
        assert upstream_proc.stdout is not None
        upstream = int(upstream_proc.stdout.readline())
        # The app's certificate, also for the name wrk sends as SNI (the URL's host).
        cert, key = self_signed([HOST])
        files.publish(
            workdir / "tls",
            [files.AppCert("bench", cert, key, (HOST, "127.0.0.1"), redirect=False)],
        )
        for backend in ("builtin", "nginx"):
            with rivetr(workdir, upstream, backend) as port:
                wrk_tls("warm-up", port, 1, c)
                keepalive[backend] = wrk_tls(backend, port, d, c)
                per_second[backend] = handshakes(port, d)
                if backend == "builtin":
                    direct = asyncio.run(open_loop(upstream, HOST, args.rate, 5))
                    over_tls = asyncio.run(tls_open_loop(port, args.rate, 5))
    print(
        f"\nHTTPS, 1 worker each, same certificate (ECDSA P-256) and upstream; "
        f"wrk -t1 -c{c} -d{d}s keep-alive"
    )
    print(f"{'':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'handshakes/s':>13}")
    for name in ("builtin", "nginx"):
        r = keepalive[name]
        print(f"{name:10} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {per_second[name]:13.0f}")
    ratio = keepalive["builtin"].rps / keepalive["nginx"].rps
    print(
        f"built-in / nginx: keep-alive req/s {ratio:.2f} (target >= 0.5), "
        f"handshakes/s {per_second['builtin'] / per_second['nginx']:.2f}"
    )
    print(f"\nopen loop at {args.rate} req/s for 5 s (latency from the scheduled send):")
    for name, lat in (("plain, direct to the app", direct), ("TLS, through built-in", over_tls)):
        print(
            f"  {name:26} p50 {lat['p50']:6.2f} ms  p99 {lat['p99']:6.2f} ms  "
            f"({lat['done']} answered, {lat['errors']} errors)"
        )
    print(f"  added p99: {over_tls['p99'] - direct['p99']:.2f} ms (target <= 3 ms)")


if __name__ == "__main__":
    main()
