"""Resident memory of `rivetr-git serve`: idle, with many apps, and over many redeploys.

What it measures
----------------
The RSS (VmRSS in /proc/PID/status) of a throwaway `rivetr-git serve` (own temp data
dir, ports picked by the OS) at three points:

1. idle, with 0 apps, a few seconds after it reported ready;
2. after deploying --apps apps (default 50): one push each of the same tiny FROM-scratch
   busybox httpd app to a distinct app name, one after another, measured once at the end;
3. after --redeploys further deploys (default 100), each a new commit, spread round-robin
   over --redeploy-apps of those apps (default 4), sampled every 25 deploys to show a
   trend, with the final sample taken after a short settle.

Side by side, the floor any Python server on this stack pays: the RSS of a bare Python
process (the same interpreter) that only imports aiohttp.web, asyncssh, docker, pygit2,
cryptography and aiosqlite, measured in a subprocess.

Reading the output
------------------
A table of RSS in MB (MiB: the kB figure from /proc divided by 1024), split into anon
(heap: Python objects, SQLite's page cache, native allocations) and file (mapped files:
shared libraries, git packs), with the peak RSS so far (VmHWM), open file descriptors
and threads at each point; fds and threads should not climb with deploys either.
Then the targets: idle RSS under 100 MB, and no growth over the redeploys, i.e.
RSS after redeploys / RSS after the apps <= 1.05 (5% slack for allocator noise).
A deploy that fails is reported with the server's reason and retried once (at most 5
failures per run). Last, the daemon's log warnings/errors, the count of containers and
images the instance holds (expected: one running container per app), and the cleanup
(daemon stopped by PID, containers and images removed by label, temp dir deleted).

Run from the project root:  .venv/bin/python bench/idle_memory.py [--apps 50] [--redeploys 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from harness import (
    AppRepo,
    DeployFailed,
    Server,
    bench_main,
    failure_reason,
    fd_count,
    proc_status,
    report_server_health,
    run,
    workspace,
)

BASELINE_MODULES = ("aiohttp.web", "asyncssh", "docker", "pygit2", "cryptography", "aiosqlite")
TARGET_IDLE_MB = 100.0
GROWTH_TOLERANCE = 1.05
SAMPLE_EVERY = 25
MAX_FAILURES = 5  # a failed deploy is reported and retried once, up to this many in a run


@dataclass(frozen=True)
class Sample:
    label: str
    rss_kb: int
    anon_kb: int | None = None
    file_kb: int | None = None
    hwm_kb: int | None = None
    fds: int | None = None
    threads: int | None = None


def mb(kb: int) -> float:
    return kb / 1024


def sample_server(server: Server, label: str, settle: float = 0.0) -> Sample:
    time.sleep(settle)
    status = proc_status(server.pid)
    return Sample(
        label,
        status["VmRSS"],
        status["RssAnon"],
        status["RssFile"],
        status["VmHWM"],
        fd_count(server.pid),
        status["Threads"],
    )


def baseline() -> Sample:
    """RSS of a fresh interpreter that imports the server's dependencies and nothing else."""
    code = (
        f"import {', '.join(BASELINE_MODULES)}\n"
        "for line in open('/proc/self/status'):\n"
        "    if line.startswith(('VmRSS:', 'RssAnon:', 'RssFile:', 'VmHWM:')):\n"
        "        print(line.split()[0], line.split()[1])\n"
    )
    out = dict(line.split() for line in run([sys.executable, "-c", code]).splitlines())
    return Sample(
        "baseline: python + imports only",
        int(out["VmRSS:"]),
        int(out["RssAnon:"]),
        int(out["RssFile:"]),
        int(out["VmHWM:"]),
    )


class Deploys:
    """Pushes HEAD to an app and checks it went live; notes failures and retries once."""

    def __init__(self, server: Server, repo: AppRepo) -> None:
        self.server = server
        self.repo = repo
        self.failures: list[str] = []

    def __call__(self, app: str) -> None:
        for attempt in (1, 2):
            result = self.server.push(self.repo, app)
            if result.returncode == 0 and any("-----> Running:" in ln for ln in result.output):
                return
            reason = f"{app} (attempt {attempt}): {failure_reason(result.output)}"
            self.failures.append(reason)
            print(f"  ! deploy failed: {reason}", flush=True)
            if attempt == 2 or len(self.failures) > MAX_FAILURES:
                raise DeployFailed(f"giving up after {len(self.failures)} failed deploy(s)")


def deploy_apps(server: Server, deploy: Deploys, names: list[str]) -> None:
    started = time.monotonic()
    for i, name in enumerate(names, 1):
        deploy(name)
        if i % 10 == 0 or i == len(names):
            print(
                f"  deployed {i}/{len(names)} apps ({time.monotonic() - started:.0f}s, "
                f"RSS {mb(server.rss_kb()):.1f} MB)",
                flush=True,
            )


def redeploy(
    server: Server, repo: AppRepo, deploy: Deploys, names: list[str], count: int
) -> list[Sample]:
    """`count` new commits, deployed round-robin over `names`; a sample every SAMPLE_EVERY."""
    samples: list[Sample] = []
    started = time.monotonic()
    for i in range(1, count + 1):
        repo.commit(f"redeploy {i}")
        deploy(names[(i - 1) % len(names)])
        if i % SAMPLE_EVERY == 0 and i != count:
            samples.append(sample_server(server, f"after {i} redeploys"))
            print(
                f"  redeployed {i}/{count} ({time.monotonic() - started:.0f}s, "
                f"RSS {mb(samples[-1].rss_kb):.1f} MB)",
                flush=True,
            )
    return samples


def _cell(value: int | None, width: int, as_mb: bool = True) -> str:
    if value is None:
        return " " * width
    return f"{mb(value):{width}.1f}" if as_mb else f"{value:{width}d}"


def print_table(samples: list[Sample]) -> None:
    print(
        f"\n{'point':<34} {'RSS MB':>7} {'anon':>6} {'file':>6} {'peak':>6} {'fds':>4} "
        f"{'threads':>7}"
    )
    for s in samples:
        print(
            f"{s.label:<34} {mb(s.rss_kb):7.1f} {_cell(s.anon_kb, 6)} {_cell(s.file_kb, 6)} "
            f"{_cell(s.hwm_kb, 6)} {_cell(s.fds, 4, False)} {_cell(s.threads, 7, False)}"
        )


def print_verdict(idle: Sample, after_apps: Sample, final: Sample, base: Sample, apps: int) -> None:
    ratio = final.rss_kb / after_apps.rss_kb
    idle_ok = mb(idle.rss_kb) < TARGET_IDLE_MB
    print(
        f"\nidle RSS {mb(idle.rss_kb):.1f} MB (baseline {mb(base.rss_kb):.1f} MB, "
        f"+{mb(idle.rss_kb - base.rss_kb):.1f} MB for the server itself); "
        f"target < {TARGET_IDLE_MB:.0f} MB: {'ok' if idle_ok else 'MISSED'}"
    )
    added = after_apps.rss_kb - idle.rss_kb
    print(f"apps: {mb(added):+.1f} MB for {apps} apps, {added / apps:.0f} kB per app")
    print(
        f"growth over redeploys: {ratio:.3f} ({final.label} / {after_apps.label}); "
        f"target <= {GROWTH_TOLERANCE}: {'ok' if ratio <= GROWTH_TOLERANCE else 'MISSED'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=50, help="apps to deploy (default 50)")
    parser.add_argument(
        "--redeploys", type=int, default=100, help="further deploys after the apps (default 100)"
    )
    parser.add_argument(
        "--redeploy-apps",
        type=int,
        default=4,
        help="how many of the apps the redeploys rotate over (default 4)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds to wait before the idle and final samples (default 3)",
    )
    args = parser.parse_args()
    if not 1 <= args.apps <= 200 or not 1 <= args.redeploys <= 500:
        parser.error("--apps must be 1..200 and --redeploys 1..500")
    if args.redeploy_apps < 1:
        parser.error("--redeploy-apps must be at least 1")
    args.redeploy_apps = min(args.redeploy_apps, args.apps)
    began = time.monotonic()
    base = baseline()
    with workspace("rivetr-bench-mem-") as server:
        server.start()
        print(
            f"rivetr-git serve pid {server.pid}, ssh :{server.ssh_port}, proxy "
            f":{server.proxy_port}, instance {server.instance}, workdir {server.workdir}"
        )
        idle = sample_server(server, "idle, 0 apps", args.settle)
        print(f"idle RSS {mb(idle.rss_kb):.1f} MB; deploying {args.apps} apps ...", flush=True)
        repo = AppRepo.create(server.workdir / "app", "memory bench")
        names = [f"mem-{i:03d}" for i in range(1, args.apps + 1)]
        deploy = Deploys(server, repo)
        deploy_apps(server, deploy, names)
        after_apps = sample_server(server, f"after {args.apps} apps", args.settle)
        print(f"redeploying {args.redeploys} times over {args.redeploy_apps} apps ...", flush=True)
        trend = redeploy(server, repo, deploy, names[: args.redeploy_apps], args.redeploys)
        final = sample_server(server, f"after {args.redeploys} redeploys", args.settle)
        print_table([base, idle, after_apps, *trend, final])
        print_verdict(idle, after_apps, final, base, args.apps)
        print(f"failed deploys (retried): {len(deploy.failures)}")
        for failure in deploy.failures:
            print(f"  {failure}")
        print()
        report_server_health(server, expected_containers=args.apps)
    print(f"total {time.monotonic() - began:.1f}s")
    return 0


if __name__ == "__main__":
    bench_main("idle_memory", main)
