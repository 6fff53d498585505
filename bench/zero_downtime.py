"""Zero-downtime redeploys: continuous HTTP load through rivetr's proxy while the app is
redeployed over and over.

What it measures
----------------
A throwaway `rivetr-git serve` (own temp data dir, ports picked by the OS), started with
RIVETR_WATCH_WINDOW=1 (--watch-window) so that each replaced container retires 1 s after
the switch instead of the default 10 s; everything else is at its default (drain_timeout
30 s). The app is a FROM-scratch busybox image with /bin/sh (`busybox --install -s /bin`):
`busybox httpd` serves www/index.html (fast GETs, the page names the release) and
www/cgi-bin/slow, a shell CGI that sleeps 1 s and answers 200 with the release name and
the request's id (slow, non-idempotent POSTs: the proxy must neither drop nor retry them).

Load: --get-workers threads (default 4) GET / back to back, --post-workers threads
(default 2, started 1/N s apart so that a POST is always in flight) POST
/cgi-bin/slow?id=..., all with Host: zdt.localhost and a new connection per request
(--keep-alive: one kept-alive connection per worker to the proxy instead).

1. baseline: the same load for --baseline seconds (default 5) straight at the live
   container's published port (docker port), bypassing the proxy;
2. steady: the load through the proxy for --steady seconds (default 5), no deploy;
3. swaps: with the load still on, --deploys redeploys in a row (default 20), each a new
   commit (release-1, release-2, ...). After each push the script waits until the old
   container has retired (the app has no container but the live one), then pushes the
   next; the load stays on until the last old container is gone.

Every response is checked: status 2xx, the body names a release, and a POST's body echoes
its own id. Connection errors (refused, reset, timeout) are counted apart from non-2xx.

Reading the output
------------------
One line per deploy: push time, when the first request saw the new release (switch, s
after the push started), when the old container was gone (s after the switch), the
requests started in that swap window, how many failed, and how many POSTs were in flight
across the switch (started before it, answered by the old release after it; should be >= 1
for every swap, else the drain path was not exercised). Then, for GETs and POSTs apart:
requests, non-2xx, connection errors, bad bodies, requests/s and p50/p99/max latency in
ms for baseline (direct), steady (proxy) and swaps (proxy: from each push's start until
its old container retired). p50 steady minus p50 baseline is the proxy's added latency.
The target is 0 failed requests through the proxy (non-2xx + connection errors + bad
bodies); the verdict says whether it was met. Last, the daemon's log warnings, leftover
containers, and the cleanup (daemon stopped by PID, containers and images removed by
label/name, the untagged build images of this run removed, temp dir deleted).

With --replicas N (e.g. 3): before the proxied phases, wrk (-t1 -c32, GET /, 5 s) measures
the proxy's throughput with the app's one web container, then `ps:scale zdt web=N` runs N
and wrk measures again, --rounds times (default 3) interleaved, medians compared (ratio
xN / x1; the target is >= 1). Each measurement is repeated through a plain nginx (one
worker, least_conn, upstream keep-alive; bench/nginx_lb.py) in front of the same
published container ports: the reference for what spreading over N containers costs on
this machine whoever does it. During each measurement the CPU used by the proxy in front
(rivetr's daemon and its workers, or nginx) and by Docker's `docker-proxy` port relays (one
process per published port, when dockerd runs its userland proxy) is read from /proc
(cpu_use.py) and printed per request with how busy the machine was, so the output says
where the time of the extra containers went. The steady load and the
redeploys then run with N web containers (each deploy starts N new ones, health-checks all,
switches at once and retires the old N), and "retired" means N containers, all running.

Run from the project root:  .venv/bin/python bench/zero_downtime.py [--deploys 20]
[--replicas 3]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import math
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cpu_use import CpuMeter, descendants, named
from harness import (
    APP_PORT,
    AppRepo,
    BenchError,
    BuildLeftovers,
    Server,
    bench_main,
    build_leftovers,
    deployment_id,
    failure_reason,
    median,
    published_port,
    report_server_health,
    wait_for_content,
    workspace,
)
from nginx_lb import nginx_balancer

APP = "zdt"
HOST = f"{APP}.localhost"
RELEASE = re.compile(r"release-(\d+)")
MAX_SECONDS = 290.0  # default budget for the whole run; deploys stop early past it
RETIRE_TIMEOUT = 60.0

DOCKERFILE = f"""\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY www /www
EXPOSE {APP_PORT}
CMD ["/bin/busybox", "httpd", "-f", "-p", "{APP_PORT}", "-h", "/www"]
"""

SLOW_CGI = """\
#!/bin/sh
# Slow and non-idempotent: read the body, take 1 s, answer with the id and the release.
[ "${CONTENT_LENGTH:-0}" -gt 0 ] && head -c "$CONTENT_LENGTH" >/dev/null
sleep 1
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "$REQUEST_METHOD $QUERY_STRING $(cat /www/index.html)"
"""


@dataclass
class Sample:
    """One request as the client saw it. Times are time.monotonic()."""

    kind: str  # GET or POST
    phase: str  # baseline (direct to the container) or proxy
    start: float
    end: float
    status: int | None  # None: connection error (see `error`)
    release: int | None
    error: str  # '' when the answer was good

    @property
    def failed(self) -> bool:
        return bool(self.error)


@dataclass
class Swap:
    """One redeploy. Times are time.monotonic()."""

    release: int
    deployment: int | None
    push_start: float
    push_end: float
    retired: float | None


# --- load --------------------------------------------------------------------------------------


class Load:
    """Worker threads sending requests to 127.0.0.1:port until stopped."""

    def __init__(
        self, port: int, phase: str, get_workers: int, post_workers: int, keep_alive: bool
    ) -> None:
        self.port = port
        self.phase = phase
        self.keep_alive = keep_alive
        self.samples: list[Sample] = []  # list.append is atomic: no lock needed
        self._stop = threading.Event()
        self._ids = itertools.count(1)
        self._threads = [
            threading.Thread(target=self._loop, args=("GET", 0.0), daemon=True)
            for _ in range(get_workers)
        ]
        self._threads += [
            threading.Thread(target=self._loop, args=("POST", i / post_workers), daemon=True)
            for i in range(post_workers)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def _loop(self, kind: str, delay: float) -> None:
        if self._stop.wait(delay):
            return
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=10 if kind == "GET" else 40
                )
            conn = self._one(conn, kind)

    def _one(
        self, conn: http.client.HTTPConnection, kind: str
    ) -> http.client.HTTPConnection | None:
        """Send one request; return the connection if it may be used again."""
        headers = {"Host": HOST}
        if not self.keep_alive:
            headers["Connection"] = "close"
        request_id = f"{self.phase}-{next(self._ids)}"
        status: int | None = None
        release: int | None = None
        error = ""
        reuse = False
        start = time.monotonic()
        try:
            if kind == "GET":
                conn.request("GET", "/", headers=headers)
            else:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                conn.request(
                    "POST", f"/cgi-bin/slow?id={request_id}", body=b"order=1", headers=headers
                )
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            status = resp.status
            reuse = self.keep_alive and not resp.will_close
            match = RELEASE.search(body)
            release = int(match.group(1)) if match else None
            if not 200 <= status < 300:
                error = f"HTTP {status}: {body.strip()[:80]}"
            elif release is None:
                error = f"no release in body: {body.strip()[:80]!r}"
            elif kind == "POST" and f"POST id={request_id} " not in body:
                error = f"wrong POST answer: {body.strip()[:80]!r}"
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        end = time.monotonic()
        self.samples.append(Sample(kind, self.phase, start, end, status, release, error))
        if reuse:
            return conn
        conn.close()
        return None


# --- statistics --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def in_swap(t: float, swaps: Sequence[Swap]) -> bool:
    return any(s.push_start <= t <= (s.retired or s.push_end) for s in swaps)


def switch_time(samples: Sequence[Sample], swap: Swap) -> float | None:
    """When the route moved: the start of the first request answered by the new release."""
    starts = [s.start for s in samples if s.release == swap.release and s.start >= swap.push_start]
    return min(starts) if starts else None


@dataclass
class Row:
    label: str
    samples: list[Sample]
    seconds: float


def print_table(kind: str, rows: Sequence[Row]) -> None:
    print(
        f"\n{kind}s            requests  non-2xx  conn-err  bad-body    req/s     p50 ms"
        "     p99 ms     max ms"
    )
    for row in rows:
        mine = [s for s in row.samples if s.kind == kind]
        lat = sorted((s.end - s.start) * 1000 for s in mine if not s.failed)
        non_2xx = sum(1 for s in mine if s.status is not None and not 200 <= s.status < 300)
        conn_err = sum(1 for s in mine if s.status is None)
        bad = sum(1 for s in mine if s.failed) - non_2xx - conn_err
        rate = len(mine) / row.seconds if row.seconds > 0 else float("nan")
        print(
            f"  {row.label:<16} {len(mine):8d} {non_2xx:8d} {conn_err:9d} {bad:9d} "
            f"{rate:8.1f} {percentile(lat, 50):10.2f} {percentile(lat, 99):10.2f} "
            f"{(lat[-1] if lat else float('nan')):10.2f}"
        )


# --- the run -----------------------------------------------------------------------------------


def deploy(server: Server, repo: AppRepo, release: int, nonce: str) -> tuple[float, float, int]:
    """Commit and push release-N; (push start, push end, deployment id). Raises BenchError."""
    repo.commit(f"release-{release} {nonce}")
    started = time.monotonic()
    result = server.push(repo, APP)
    ended = time.monotonic()
    if result.returncode != 0:
        raise BenchError(f"deploy of release-{release} failed: {failure_reason(result.output)}")
    number = deployment_id(result.output)
    if number is None:
        raise BenchError(f"no deployment number in the push output of release-{release}")
    return started, ended, number


def wait_retired(server: Server, deadline: float, replicas: int = 1) -> float | None:
    """Poll until the app has exactly its live containers (`replicas`, all running); the
    time, or None."""
    while time.monotonic() < deadline:
        containers = server.app_containers(APP)
        if len(containers) == replicas and all(c[2] == "running" for c in containers):
            return time.monotonic()
        time.sleep(0.05)
    return None


WRK_SECONDS = 5


def wrk_rps(port: int, seconds: int = WRK_SECONDS, connections: int = 32) -> tuple[float, str]:
    """wrk's requests/s through the proxy for GET /, and its error line if any."""
    out = subprocess.run(
        [
            *("wrk", "-t1", f"-c{connections}", f"-d{seconds}s"),
            *("-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise BenchError(f"wrk printed no rate:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: \d+|Socket errors: .*", out)
    return float(match.group(1)), errors.group(0) if errors else ""


def ps_scale(server: Server, replicas: int) -> None:
    """`ps:scale zdt web=N` over SSH; returns once N web containers run alone."""
    ssh = server.push_env()["GIT_SSH_COMMAND"].split()
    done = subprocess.run(
        [*ssh, "-p", str(server.ssh_port), "git@127.0.0.1", f"ps:scale {APP} web={replicas}"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise BenchError(f"ps:scale failed: {done.stderr.strip()[-300:]}")
    if wait_retired(server, time.monotonic() + RETIRE_TIMEOUT, replicas) is None:
        raise BenchError(f"{replicas} web containers did not come up alone")


@dataclass
class Round:
    """One wrk measurement: req/s, and CPU per request (µs) of the front proxy (rivetr's
    daemon and its proxy workers, or nginx) and of Docker's docker-proxy port relays."""

    rate: float
    proxy_us: float
    relays_us: float
    busy: float


def measured(port: int, front: int) -> tuple[Round, str]:
    """wrk through `port` while the CPU of `front` (and its children) and of every
    docker-proxy is metered."""
    wrk_rps(port, 1)  # warm-up
    groups = {"front": lambda: descendants(front), "relays": lambda: named("docker-proxy")}
    with CpuMeter(groups) as meter:
        rate, err = wrk_rps(port)
    requests = max(1.0, rate * WRK_SECONDS)
    us = {name: seconds / requests * 1e6 for name, seconds in meter.seconds.items()}
    return Round(rate, us["front"], us["relays"], meter.busy), err


def scale_up(server: Server, replicas: int, rounds: int) -> None:
    """Throughput with one web container against `replicas`, interleaved over `rounds`
    (the machine is noisy), ending scaled to `replicas`; each time also through a plain
    nginx in front of the same containers (nginx_lb.py), the reference."""
    if shutil.which("wrk") is None:
        raise BenchError("--replicas needs wrk (apt-get install -y wrk)")
    results: dict[tuple[str, int], list[Round]] = {}
    errors: list[str] = []
    for round_ in range(rounds):
        for count in (1, replicas):
            if round_ or count > 1:
                ps_scale(server, count)
            ports = [published_port(c[0]) for c in server.app_containers(APP)]
            with nginx_balancer(server.workdir / f"nginx-ref-{round_}-{count}", ports) as ref:
                fronts = (("rivetr", server.proxy_port, server.pid), ("nginx", *ref))
                for who, port, front in fronts:
                    result, err = measured(port, front)
                    results.setdefault((who, count), []).append(result)
                    if err:
                        errors.append(f"{who} x{count}: {err}")
    print(f"\nproxy throughput, wrk -t1 -c32 -d{WRK_SECONDS}s GET /, {rounds} interleaved rounds:")
    for who in ("rivetr", "nginx"):
        ones, manys = results[(who, 1)], results[(who, replicas)]
        one, many = median([r.rate for r in ones]), median([r.rate for r in manys])
        print(
            f"  {who + (' proxy' if who == 'rivetr' else ' (reference)'):<18} 1 web container "
            f"{' '.join(f'{r.rate:.0f}' for r in ones)} req/s, {replicas}: "
            f"{' '.join(f'{r.rate:.0f}' for r in manys)} req/s; medians "
            f"{one:.0f} and {many:.0f}: ratio {many / one:.2f}"
            + (" (target >= 1)" if who == "rivetr" else "")
        )
    for line in errors:
        print(f"  wrk errors {line}")
    print_cpu(results)


def print_cpu(results: dict[tuple[str, int], list[Round]]) -> None:
    """Medians of CPU per request: what spreading over more containers costs, and where."""
    print("  CPU per request (medians): the proxy in front; Docker's docker-proxy relays")
    print("  (one process per published port); how busy the whole machine was")
    for (who, count), rounds in sorted(results.items()):
        relays = median([r.relays_us for r in rounds])
        print(
            f"    {who:<7} x{count}: proxy {median([r.proxy_us for r in rounds]):4.0f} µs, "
            + (f"docker-proxy {relays:4.0f} µs" if relays else "no docker-proxy relays")
            + f", machine {median([r.busy for r in rounds]) * 100:3.0f}% busy"
        )


def live_container(server: Server) -> str:
    running = [c for c in server.app_containers(APP) if c[2] == "running"]
    if len(running) != 1:
        raise BenchError(f"expected one running container of {APP}, found {running}")
    return running[0][0]


def run_swaps(
    server: Server,
    repo: AppRepo,
    leftovers: BuildLeftovers,
    nonce: str,
    args: argparse.Namespace,
    deadline: float,
) -> list[Swap]:
    swaps: list[Swap] = []
    for release in range(1, args.deploys + 1):
        if time.monotonic() > deadline - 30:
            print(
                f"  ! time budget ({args.max_seconds:g} s) nearly used: stopping after "
                f"{len(swaps)} deploy(s)"
            )
            break
        start, end, number = deploy(server, repo, release, nonce)
        leftovers.record(f"rivetr-{server.instance}/{APP}:{number}")
        retired = wait_retired(server, time.monotonic() + RETIRE_TIMEOUT, args.replicas)
        swaps.append(Swap(release, number, start, end, retired))
        if retired is None:
            print(
                f"  ! release-{release}: the old container was still there after "
                f"{RETIRE_TIMEOUT:g}s: {server.app_containers(APP)}"
            )
    return swaps


def report_swaps(samples: Sequence[Sample], swaps: Sequence[Swap]) -> list[int]:
    """Print one line per deploy; return the POSTs across each switch."""
    print("\ndeploy  push s  switch s  retired s  requests  failed  POSTs across switch")
    across_all: list[int] = []
    for swap in swaps:
        switched = switch_time(samples, swap)
        end = swap.retired or swap.push_end
        window = [s for s in samples if swap.push_start <= s.start <= end]
        across = 0
        if switched is not None:
            across = sum(
                1
                for s in samples
                if s.kind == "POST"
                and s.start < switched < s.end
                and s.release == swap.release - 1
                and not s.failed
            )
        across_all.append(across)
        sw = "   -    " if switched is None else f"{switched - swap.push_start:8.3f}"
        ret = (
            "   -     "
            if switched is None or swap.retired is None
            else f"{swap.retired - switched:9.3f}"
        )
        print(
            f"{swap.release:6d}  {swap.push_end - swap.push_start:6.3f}  {sw}  {ret}  "
            f"{len(window):8d}  {sum(1 for s in window if s.failed):6d}  {across:6d}"
        )
    return across_all


def report(
    samples: list[Sample],
    swaps: list[Swap],
    baseline_span: float,
    steady_span: tuple[float, float],
    load_stopped: float,
    args: argparse.Namespace,
) -> bool:
    across = report_swaps(samples, swaps)
    direct = [s for s in samples if s.phase == "baseline"]
    proxy = [s for s in samples if s.phase == "proxy"]
    steady = [s for s in proxy if s.start < steady_span[1]]
    during = [s for s in proxy if in_swap(s.start, swaps)]
    other = [s for s in proxy if s.start >= steady_span[1] and not in_swap(s.start, swaps)]
    swap_seconds = sum((s.retired or s.push_end) - s.push_start for s in swaps)
    other_seconds = max(0.0, load_stopped - steady_span[1] - swap_seconds)
    rows = [
        Row("baseline direct", direct, baseline_span),
        Row("steady proxy", steady, steady_span[1] - steady_span[0]),
        Row("swaps proxy", during, swap_seconds),
    ]
    if other:
        rows.append(Row("between swaps", other, other_seconds))
    print_table("GET", rows)
    print_table("POST", rows)

    failed = [s for s in proxy if s.failed]
    non_2xx = sum(1 for s in failed if s.status is not None and not 200 <= s.status < 300)
    conn_err = sum(1 for s in failed if s.status is None)
    print(
        f"\nthrough the proxy: {len(proxy)} requests sent ({sum(s.kind == 'GET' for s in proxy)}"
        f" GET, {sum(s.kind == 'POST' for s in proxy)} POST), {non_2xx} non-2xx, {conn_err} "
        f"connection errors, {len(failed) - non_2xx - conn_err} bad bodies"
    )
    for s in failed[:10]:
        print(
            f"  {s.kind} at +{s.start - steady_span[0]:.3f}s "
            f"({'swap' if in_swap(s.start, swaps) else 'no swap'}): {s.error}"
        )
    if direct_failed := [s for s in direct if s.failed]:
        print(
            f"  (the direct baseline had {len(direct_failed)} failed requests, e.g. "
            f"{direct_failed[0].error})"
        )
    retired = [s for s in swaps if s.retired is not None]
    print(
        f"deploys: {len(swaps)} of {args.deploys} done, {len(retired)} old containers retired "
        f"(watch_window {args.watch_window:g}s); POSTs across a switch: min "
        f"{min(across, default=0)}, total {sum(across)}"
    )
    ok = not failed and len(swaps) == args.deploys and len(retired) == len(swaps)
    print(
        f"target: 0 failed requests through the proxy across {args.deploys} deploys: "
        f"{'met' if ok else 'MISSED'}"
    )
    if min(across, default=0) == 0:
        print("  note: some switch had no POST in flight across it")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploys", type=int, default=20, help="redeploys (default 20)")
    parser.add_argument("--get-workers", type=int, default=4, help="GET threads (default 4)")
    parser.add_argument("--post-workers", type=int, default=2, help="POST threads (default 2)")
    parser.add_argument(
        "--baseline",
        type=float,
        default=5.0,
        help="seconds of load straight at the container (default 5)",
    )
    parser.add_argument(
        "--steady",
        type=float,
        default=5.0,
        help="seconds of load through the proxy before the first push (default 5)",
    )
    parser.add_argument(
        "--watch-window",
        type=float,
        default=1.0,
        help="RIVETR_WATCH_WINDOW for the daemon (default 1; server default 10)",
    )
    parser.add_argument(
        "--keep-alive", action="store_true", help="reuse one connection per worker to the proxy"
    )
    parser.add_argument(
        "--proxy-backend",
        choices=("builtin", "nginx"),
        default="builtin",
        help="the daemon's data plane (proxy_backend; default builtin)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="web containers (ps:scale) for the proxied phases; >1 also compares wrk "
        "throughput against one (default 1)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=MAX_SECONDS,
        help=f"time budget; deploys stop early past it (default {MAX_SECONDS:g}; several "
        "web containers per deploy take longer on a loaded machine)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="with --replicas: interleaved wrk rounds at 1 and N web containers (default 3)",
    )
    parser.add_argument(
        "--save-log", type=Path, metavar="FILE", help="copy the daemon's log here before cleanup"
    )
    args = parser.parse_args()
    if not (1 <= args.replicas <= 8 and 1 <= args.rounds <= 9):
        parser.error("--replicas must be from 1 to 8 and --rounds from 1 to 9")
    if not 60 <= args.max_seconds <= 1800:
        parser.error("--max-seconds must be from 60 to 1800")
    if not 1 <= args.deploys <= 60:
        parser.error("--deploys must be from 1 to 60")
    if not (1 <= args.get_workers <= 32 and 1 <= args.post_workers <= 16):
        parser.error("--get-workers must be 1..32 and --post-workers 1..16")
    if not (0.5 <= args.baseline <= 60 and 0.5 <= args.steady <= 60):
        parser.error("--baseline and --steady must be from 0.5 to 60 seconds")
    began = time.monotonic()
    deadline = began + args.max_seconds
    nonce = uuid.uuid4().hex[:8]
    with build_leftovers() as leftovers, workspace("rivetr-bench-zdt-", args.save_log) as server:
        server.start(
            settings={
                "RIVETR_WATCH_WINDOW": f"{args.watch_window:g}",
                "RIVETR_PROXY_BACKEND": args.proxy_backend,
            }
        )
        print(
            f"rivetr-git serve pid {server.pid}, proxy :{server.proxy_port}, instance "
            f"{server.instance}, workdir {server.workdir}"
        )
        print(
            f"settings: RIVETR_PROXY_BACKEND={args.proxy_backend}, "
            f"RIVETR_WATCH_WINDOW={args.watch_window:g} (so each old container "
            f"retires {args.watch_window:g}s after its switch; server default 10), other "
            "settings at their defaults (drain_timeout 30)"
        )
        print(
            f"load: {args.get_workers} GET + {args.post_workers} POST workers, "
            f"{'keep-alive' if args.keep_alive else 'a new connection per request'}"
        )
        repo = AppRepo.create(
            server.workdir / "app",
            "release-0 first",
            dockerfile=DOCKERFILE,
            files={"www/cgi-bin/slow": SLOW_CGI},
            executable={"www/cgi-bin/slow"},
        )
        result = server.push(repo, APP)
        if result.returncode != 0:
            raise BenchError(f"first deploy failed: {failure_reason(result.output)}")
        if wait_for_content(server.proxy_port, HOST, "release-0", time.monotonic() + 10) is None:
            raise BenchError("the proxy never served release-0")
        number = deployment_id(result.output)
        leftovers.record(f"rivetr-{server.instance}/{APP}:{number}")

        port = published_port(live_container(server))
        print(
            f"\nbaseline: {args.baseline:g}s straight at the container (127.0.0.1:{port}) ...",
            flush=True,
        )
        direct = Load(port, "baseline", args.get_workers, args.post_workers, False).start()
        b0 = time.monotonic()
        try:
            time.sleep(args.baseline)
        finally:
            direct.stop()
        baseline_span = time.monotonic() - b0

        if args.replicas > 1:
            scale_up(server, args.replicas, args.rounds)
        print(
            f"steady: {args.steady:g}s through the proxy, then {args.deploys} deploys under "
            f"load, {args.replicas} web container(s) ...",
            flush=True,
        )
        load = Load(
            server.proxy_port, "proxy", args.get_workers, args.post_workers, args.keep_alive
        ).start()
        s0 = time.monotonic()
        try:
            time.sleep(args.steady)
            s1 = time.monotonic()
            swaps = run_swaps(server, repo, leftovers, nonce, args, deadline)
        finally:
            stopped = time.monotonic()
            load.stop()
        ok = report(direct.samples + load.samples, swaps, baseline_span, (s0, s1), stopped, args)
        print()
        report_server_health(server, expected_containers=args.replicas)
    print(f"total {time.monotonic() - began:.1f}s")
    return 0 if ok else 2


if __name__ == "__main__":
    bench_main("zero_downtime", main)
