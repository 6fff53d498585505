"""Push-to-live latency of rivetr-git, next to the by-hand floor on the same machine.

What it measures
----------------
A throwaway `rivetr-git serve` (own temp data dir, ports picked by the OS) and a tiny
static app: a FROM-scratch image holding /bin/busybox, serving www/ with `busybox httpd`.
Every round makes a new commit that changes www/index.html and deploys it twice,
interleaved (the order alternates per round, since the machine is noisy):

* rivetr:  `git push ssh://git@127.0.0.1:PORT/bench main`. Measured from the start of the
  push to the first 200 carrying the new content through rivetr's proxy
  (Host: bench.localhost), polled every 10 ms (--poll-interval) while the push runs.
  Also measured: the time to the first streamed `remote:` line on git's stderr, when
  git exited, and the server's own figure from its `-----> Running: ... (live in X s)`
  line (the daemon's clock, from the start of the deploy, i.e. after git sent the pack).
* by hand: the floor for the same work done with plain tools: `git push` to a local bare
  repo (file path), `docker build` of the same tree (`git archive HEAD`, layer cache
  warm), `docker run -d --init -p 127.0.0.1::5000`, poll that port until the first 200
  with the new content, then (untimed) `docker rm -f` of the previous by-hand container.
  (The by-hand build adds one `--label`, for cleanup; rivetr's build adds two.)

The two sides commit different page text, so neither reuses the other's `COPY www`
layer; the busybox layer is cached for both. A warm-up round (creates the app, fills the
layer cache) runs first and is not counted. A round whose deploy fails (either side) is
reported with the reason and re-run with a new commit, at most 3 times per run.

Reading the output
------------------
One line per round (seconds): rivetr push-to-live, first `remote:` line, server's
"live in", git exit; by-hand push-to-live and its parts (push, build, run, ready = start
to first 200). The summary gives medians, the ratio rivetr/by-hand (target <= 1.0: the
server adds no overhead over doing it by hand) and the median time to the first output
line (target <= 0.3 s: the pusher sees progress at once). Before the summary, the last
rivetr push's output as git printed it; after it, the daemon's log warnings and whether
containers were left behind, then the cleanup (daemon stopped by PID, containers and
images removed by label, temp dir deleted).

Run from the project root:  .venv/bin/python bench/push_to_live.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness import (
    APP_PORT,
    BENCH_LABEL,
    AppRepo,
    BenchError,
    DeployFailed,
    PushResult,
    Server,
    bench_main,
    failure_reason,
    fmt_s,
    http_get,
    median,
    report_server_health,
    run,
    wait_for_content,
    watch_push,
    workspace,
)

APP = "bench"
LIVE_IN = re.compile(r"\(live in ([0-9.]+)s\)")
TARGET_RATIO = 1.0
TARGET_FIRST_LINE = 0.3
AFTER_EXIT_GRACE = 5.0  # how long to keep polling once git push has exited 0
MAX_FAILURES = 3  # failed deploys are reported and the round re-run, up to this many


@dataclass
class RivetrRound:
    to_live: float | None
    first_line: float | None
    push_exit: float
    server_live: float | None
    output: list[str]


@dataclass
class ByHandRound:
    to_live: float | None
    push: float
    build: float
    run: float
    ready: float | None


# --- rivetr ------------------------------------------------------------------------------------


def rivetr_round(
    server: Server, repo: AppRepo, content: str, timeout: float, interval: float
) -> RivetrRound:
    """Push the current commit and poll the proxy until it serves `content`."""
    host = f"{APP}.localhost"
    started = time.monotonic()
    proc = server.start_push(repo, APP)
    results: list[PushResult | BaseException] = []

    def _watch() -> None:
        try:
            results.append(watch_push(proc, started, timeout))
        except BaseException as exc:
            results.append(exc)

    watcher = threading.Thread(target=_watch, daemon=True)
    watcher.start()
    live = poll_while_pushing(server.proxy_port, host, content, started, timeout, interval, results)
    watcher.join(timeout)
    if not results:
        raise BenchError("git push watcher did not finish")
    result = results[0]
    if isinstance(result, BaseException):
        raise result
    if result.returncode != 0:
        raise DeployFailed(f"rivetr: {failure_reason(result.output)}")
    if live is None:
        raise DeployFailed("rivetr: git push succeeded but the proxy never served the new page")
    match = next((m for line in result.output if (m := LIVE_IN.search(line))), None)
    return RivetrRound(
        to_live=live,
        first_line=result.first_remote_line,
        push_exit=result.exited,
        server_live=float(match.group(1)) if match else None,
        output=result.output,
    )


def poll_while_pushing(
    port: int,
    host: str,
    content: str,
    started: float,
    timeout: float,
    interval: float,
    results: list[PushResult | BaseException],
) -> float | None:
    """Seconds from `started` to the first 200 with `content`; None if it never came."""
    while time.monotonic() - started < timeout:
        answer = http_get(port, host)
        now = time.monotonic()
        if answer is not None and answer[0] == 200 and content in answer[1]:
            return now - started
        if results:
            done = results[0]
            if isinstance(done, BaseException) or done.returncode != 0:
                return None
            if now - started > done.exited + AFTER_EXIT_GRACE:
                return None
        time.sleep(interval)
    return None


# --- by hand -----------------------------------------------------------------------------------


class ByHand:
    """The same deploy done with git and the docker CLI, one container at a time."""

    def __init__(self, workdir: Path, repo: AppRepo, run_label: str) -> None:
        self.bare = workdir / "byhand.git"
        self.repo = repo
        self.label = run_label
        self.tag_base = f"rivetr-bench-{run_label.rpartition('=')[2]}/byhand"
        self.count = 0
        self.previous: str | None = None
        run(["git", "init", "-q", "--bare", self.bare])

    def deploy(self, content: str, timeout: float, interval: float) -> ByHandRound:
        self.count += 1
        tag = f"{self.tag_base}:{self.count}"
        started = time.monotonic()
        self.repo.git("push", "-q", str(self.bare), "HEAD:refs/heads/main")
        pushed = time.monotonic()
        try:
            run(
                ["docker", "build", "-q", "-t", tag, "--label", self.label, "-"],
                stdin=self.repo.archive(),
                timeout=timeout,
            )
        except BenchError as exc:
            raise DeployFailed(f"by hand: {str(exc).splitlines()[-1]}") from None
        built = time.monotonic()
        container = run(
            [
                "docker",
                "run",
                "-d",
                "--init",
                "--label",
                self.label,
                "-p",
                f"127.0.0.1::{APP_PORT}",
                tag,
            ]
        ).strip()
        port = int(run(["docker", "port", container, f"{APP_PORT}/tcp"]).split(":")[-1])
        ran = time.monotonic()
        seen = wait_for_content(port, "localhost", content, started + timeout, interval)
        if self.previous is not None:
            run(["docker", "rm", "-f", self.previous])
        self.previous = container
        return ByHandRound(
            to_live=None if seen is None else seen - started,
            push=pushed - started,
            build=built - pushed,
            run=ran - built,
            ready=None if seen is None else seen - ran,
        )


# --- reporting ---------------------------------------------------------------------------------


HEADER = (
    "round | rivetr: live  1st-line server-live git-exit | by hand: live    push   build"
    "     run   ready"
)


def print_round(label: str, r: RivetrRound, h: ByHandRound) -> None:
    print(
        f"{label:>5} |       {fmt_s(r.to_live)}  {fmt_s(r.first_line)}      "
        f"{fmt_s(r.server_live)}   {fmt_s(r.push_exit)} |       {fmt_s(h.to_live)}  "
        f"{fmt_s(h.push)}  {fmt_s(h.build)}  {fmt_s(h.run)}  {fmt_s(h.ready)}",
        flush=True,
    )


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def print_summary(
    rivetr: list[RivetrRound], by_hand: list[ByHandRound], failures: list[str]
) -> None:
    r_live = [r.to_live for r in rivetr if r.to_live is not None]
    h_live = [h.to_live for h in by_hand if h.to_live is not None]
    first = [r.first_line for r in rivetr if r.first_line is not None]
    server = [r.server_live for r in rivetr if r.server_live is not None]
    r_med, h_med, f_med = median(r_live), median(h_live), median(first)
    ratio = r_med / h_med if h_med else float("nan")
    print(f"\nsummary over {len(rivetr)} round(s) (medians, seconds):")
    print(f"  rivetr push-to-live          {r_med:6.3f}   ({len(r_live)}/{len(rivetr)} went live)")
    print(f"  by-hand push-to-live         {h_med:6.3f}   ({len(h_live)}/{len(by_hand)} went live)")
    print(
        f"  ratio rivetr / by-hand       {ratio:6.2f}   target <= {TARGET_RATIO:.1f}: "
        f"{verdict(ratio <= TARGET_RATIO)}"
    )
    print(
        f"  first `remote:` line         {f_med:6.3f}   target <= {TARGET_FIRST_LINE} s: "
        f"{verdict(f_med <= TARGET_FIRST_LINE)}"
    )
    print(
        f"  server-side 'live in'        {median(server):6.3f}   (the daemon's own clock, "
        "from the deploy's start)"
    )
    print(f"  git push exit                {median([r.push_exit for r in rivetr]):6.3f}")
    print(f"  failed deploys (re-run)      {len(failures):6d}")
    for failure in failures:
        print(f"    {failure}")


# --- main --------------------------------------------------------------------------------------


def one_round(
    i: int,
    server: Server,
    repo: AppRepo,
    by_hand: ByHand,
    nonce: str,
    args: argparse.Namespace,
) -> tuple[RivetrRound, ByHandRound]:
    """Deploy a new commit both ways; alternate which goes first."""

    def do_rivetr() -> RivetrRound:
        content = f"rivetr round {i} {nonce}"
        repo.commit(content)
        return rivetr_round(server, repo, content, args.timeout, args.poll_interval)

    def do_by_hand() -> ByHandRound:
        content = f"by-hand round {i} {nonce}"
        repo.commit(content)
        return by_hand.deploy(content, args.timeout, args.poll_interval)

    if i % 2 == 0:
        r = do_rivetr()
        return r, do_by_hand()
    h = do_by_hand()
    return do_rivetr(), h


def wait_for_retirement(server: Server, expected: int, timeout: float = 20) -> None:
    """Give the daemon's background retire of the last replaced container time to finish."""
    deadline = time.monotonic() + timeout
    while len(server.containers()) > expected and time.monotonic() < deadline:
        time.sleep(0.2)


def timed_rounds(
    server: Server, repo: AppRepo, by_hand: ByHand, nonce: str, args: argparse.Namespace
) -> tuple[list[RivetrRound], list[ByHandRound], list[str]]:
    """Run rounds until args.rounds succeeded; a failed deploy is noted and its round re-run."""
    rivetr: list[RivetrRound] = []
    hand: list[ByHandRound] = []
    failures: list[str] = []
    attempt = 0
    while len(rivetr) < args.rounds:
        attempt += 1
        label = str(len(rivetr) + 1)
        try:
            r, h = one_round(attempt, server, repo, by_hand, nonce, args)
        except DeployFailed as exc:
            failures.append(f"round {label} (attempt {attempt}): {exc}")
            print(f"{label:>5} | FAILED, will re-run: {exc}", flush=True)
            if len(failures) > MAX_FAILURES:
                raise BenchError(f"more than {MAX_FAILURES} failed deploys; giving up") from None
            continue
        print_round(label, r, h)
        rivetr.append(r)
        hand.append(h)
    return rivetr, hand, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5, max 50)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="seconds one deploy may take before the run fails (default 120)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.01,
        help="seconds between HTTP polls for the new page (default 0.01)",
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be from 1 to 50")
    if not 0.001 <= args.poll_interval <= 1:
        parser.error("--poll-interval must be from 0.001 to 1")
    nonce = uuid.uuid4().hex[:8]
    began = time.monotonic()
    with workspace("rivetr-bench-live-") as server:
        server.start()
        print(
            f"rivetr-git serve pid {server.pid}, ssh :{server.ssh_port}, proxy "
            f":{server.proxy_port}, instance {server.instance}, workdir {server.workdir}"
        )
        repo = AppRepo.create(server.workdir / "app", f"warm-up {nonce}")
        by_hand = ByHand(server.workdir, repo, f"{BENCH_LABEL}={server.instance}")
        print(HEADER)
        print_round("warm", *one_round(0, server, repo, by_hand, nonce, args))
        rivetr, hand, failures = timed_rounds(server, repo, by_hand, nonce, args)
        print("\nlast rivetr push, as git showed it:")
        print("\n".join(f"  {line}" for line in rivetr[-1].output))
        print_summary(rivetr, hand, failures)
        wait_for_retirement(server, expected=1)
        print()
        report_server_health(server, expected_containers=1)
    print(f"total {time.monotonic() - began:.1f}s")
    return 0


if __name__ == "__main__":
    bench_main("push_to_live", main)
