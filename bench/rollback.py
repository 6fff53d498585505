"""Automatic rollback: time from a new release crashing after the switch to the previous
release serving again through rivetr's proxy.

What it measures
----------------
A throwaway `rivetr-git serve` (own temp data dir, ports picked by the OS, every setting
at its default: auto_rollback on, watch_window 10 s, the watch checks every 0.5 s) and a
FROM-scratch busybox app with /bin/sh (`busybox --install -s /bin`).

First v1 is deployed: a healthy `busybox httpd` whose page says "v1 <nonce>". Then each
round pushes a v2 commit whose page says "v2 round N" and whose CMD is

    sh -c "httpd -f -p 5000 -h /www & sleep 2; kill -9 $!; exit 3"

so it passes the health check, goes live, and exits with code 3 about --crash-after
seconds (default 2) after it started: well after the switch, inside the watch window.
Round k adds (k-1)/rounds * 0.5 s to the sleep, so the crashes do not all fall at the
same point of the watch's 0.5 s cycle. While the push runs, the proxy (Host:
rb.localhost) is polled every --poll-interval (10 ms), each poll on a new connection,
noting wall-clock times. The exact exit time of v2's container is its State.FinishedAt
(nanoseconds, the engine's clock, which is this host's clock), read with `docker inspect`
as soon as `docker events` reports the container's `die` (the event itself comes about
20 ms after the exit; it is the fallback if the container is already gone). The round's
figure is

    rollback time = first 200 with v1's page after the crash - v2's FinishedAt

The server's log line "deployment #N rolled back to #M" gives its detection time (the
line's timestamp, ms, minus the exit). Part of both is Docker's: on this engine `docker
inspect`, which the server's watch polls, says "running" for 0.1-0.25 s after the exit.
v1's container stays up the whole time (that is the point: rollback is a route swap to a
container that is already running), so no redeploy of v1 is needed between rounds; the
next round starts once v2's container is removed.

Reading the output
------------------
One line per round: v2's sleep, when v2 went live (s after its push started), how long
it served before it died, the rollback time (s, exit to v1 again), the server's detection
time, and the polls between the exit and v1 that failed (502 etc.; the proxy answers 502
while the route still points at the dead container). Then median, min and max rollback
time against the target (median under 2 s), the die event's lag behind FinishedAt, the
daemon's rollback log lines, warnings, leftover containers, and the cleanup (daemon and
the `docker events` reader stopped by PID, containers and images removed by label/name,
untagged build images of this run removed, temp dir gone).

Run from the project root:  .venv/bin/python bench/rollback.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from harness import (
    APP_PORT,
    DEPLOYMENT_LABEL,
    INSTANCE_LABEL,
    AppRepo,
    BenchError,
    BuildLeftovers,
    PushResult,
    Server,
    bench_main,
    build_leftovers,
    deployment_id,
    failure_reason,
    http_get,
    median,
    report_server_health,
    stop_process,
    wait_for_content,
    watch_push,
    workspace,
)

APP = "rb"
HOST = f"{APP}.localhost"
TARGET = 2.0
ROUND_TIMEOUT = 60.0

HEALTHY = f"""\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY www /www
EXPOSE {APP_PORT}
CMD ["/bin/busybox", "httpd", "-f", "-p", "{APP_PORT}", "-h", "/www"]
"""


def crashing_dockerfile(after: float) -> str:
    """The same image, but the server is killed and the container exits 3 after `after` s."""
    return HEALTHY.replace(
        f'CMD ["/bin/busybox", "httpd", "-f", "-p", "{APP_PORT}", "-h", "/www"]',
        f'CMD ["/bin/sh", "-c", "httpd -f -p {APP_PORT} -h /www & sleep {after:g}; '
        'kill -9 $!; exit 3"]',
    )


@dataclass
class Die:
    deployment: int
    event_at: float  # when the engine sent the `die` event (wall clock, epoch seconds)
    finished_at: float | None  # the container's State.FinishedAt: the exit itself
    exit_code: str

    @property
    def at(self) -> float:
        """The exit time: FinishedAt when we got it (about 20 ms before the event)."""
        return self.finished_at if self.finished_at is not None else self.event_at


def finished_at(container: str) -> float | None:
    """State.FinishedAt of a container as epoch seconds (ns precision), None if it is gone."""
    proc = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.FinishedAt}}", container],
        capture_output=True,
        timeout=10,
        check=False,
    )
    text = proc.stdout.decode().strip()
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", text)
    if proc.returncode != 0 or match is None:
        return None
    whole = datetime.fromisoformat(match.group(1) + "+00:00").timestamp()
    return whole + float(f"0.{match.group(2) or 0}")


class DieEvents:
    """`docker events` for this instance's `die` events, read by a thread."""

    def __init__(self, instance: str) -> None:
        self.proc = subprocess.Popen(
            [
                "docker",
                "events",
                "--filter",
                f"label={INSTANCE_LABEL}={instance}",
                "--filter",
                "event=die",
                "--format",
                "{{json .}}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.events: queue.Queue[Die] = queue.Queue()
        self.seen: dict[int, Die] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError, KeyError):
                event = json.loads(line)
                attrs = event["Actor"]["Attributes"]
                # Inspect at once: the watcher removes the container soon after it notices.
                self.events.put(
                    Die(
                        int(attrs[DEPLOYMENT_LABEL]),
                        event["timeNano"] / 1e9,
                        finished_at(event["id"]),
                        attrs.get("exitCode", "?"),
                    )
                )

    def wait_for(self, deployment: int, timeout: float) -> Die | None:
        deadline = time.monotonic() + timeout
        while deployment not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                die = self.events.get(timeout=remaining)
            except queue.Empty:
                return None
            self.seen.setdefault(die.deployment, die)
        return self.seen[deployment]

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)


@contextlib.contextmanager
def die_events(instance: str) -> Iterator[DieEvents]:
    events = DieEvents(instance)
    try:
        yield events
    finally:
        events.stop()


@dataclass
class Poll:
    start: float  # wall clock
    end: float
    status: int | None
    body: str


@dataclass
class Round:
    number: int
    live_after: float | None  # v2 first served, s after the push started
    served: float | None  # v2 went live -> v2 died
    rollback: float | None  # v2 died -> first v1 answer
    detected: float | None  # v2 died -> the server logged the rollback
    failed_polls: int  # between the crash and v1 again
    note: str = ""


ROLLED_BACK = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) WARNING .*deployment #(\d+) rolled back to #(\d+)"
)


def rollback_logged(server: Server, deployment: int) -> float | None:
    """Wall-clock time of the daemon's 'deployment #N rolled back' log line, if any."""
    for line in server.log_path.read_text(errors="replace").splitlines():
        match = ROLLED_BACK.match(line)
        if match and int(match.group(2)) == deployment:
            # logging's asctime: local time, milliseconds after the comma.
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def poll_round(
    server: Server, v1: str, v2: str, interval: float, results: list[PushResult | BaseException]
) -> list[Poll]:
    """Poll the proxy until it served v2 and then v1 again (or the push failed / timeout)."""
    polls: list[Poll] = []
    seen_v2 = False
    deadline = time.monotonic() + ROUND_TIMEOUT
    while time.monotonic() < deadline:
        start = time.time()
        answer = http_get(server.proxy_port, HOST, timeout=1.0)
        end = time.time()
        status, body = answer if answer is not None else (None, "")
        polls.append(Poll(start, end, status, body))
        if status == 200 and v2 in body:
            seen_v2 = True
        elif seen_v2 and status == 200 and v1 in body:
            break
        if results and not seen_v2:
            done = results[0]
            if isinstance(done, BaseException) or done.returncode != 0:
                break  # the deploy failed: v2 never went live
        time.sleep(interval)
    return polls


def one_round(
    number: int,
    server: Server,
    repo: AppRepo,
    events: DieEvents,
    leftovers: BuildLeftovers,
    v1: str,
    nonce: str,
    crash_after: float,
    poll_interval: float,
) -> Round:
    v2 = f"v2 round {number} {nonce}"
    repo.write("Dockerfile", crashing_dockerfile(crash_after))
    repo.commit(v2)
    started_wall, started = time.time(), time.monotonic()
    proc = server.start_push(repo, APP)
    results: list[PushResult | BaseException] = []

    def _watch() -> None:
        try:
            results.append(watch_push(proc, started, 180))
        except BaseException as exc:
            results.append(exc)

    watcher = threading.Thread(target=_watch, daemon=True)
    watcher.start()
    polls = poll_round(server, v1, v2, poll_interval, results)
    watcher.join(180)
    if not results or isinstance(results[0], BaseException):
        raise BenchError(f"round {number}: git push: {results[0] if results else 'hung'}")
    result = results[0]
    if result.returncode != 0:
        return Round(
            number,
            None,
            None,
            None,
            None,
            0,
            f"deploy failed before the switch: {failure_reason(result.output)}",
        )
    d2 = deployment_id(result.output)
    if d2 is None:
        raise BenchError(f"round {number}: no deployment number in the push output")
    leftovers.record(f"rivetr-{server.instance}/{APP}:{d2}")
    first_v2 = next((p.end for p in polls if p.status == 200 and v2 in p.body), None)
    die = events.wait_for(d2, timeout=crash_after + 15)
    back = next(
        (
            p.end
            for p in polls
            if die is not None and p.start >= die.at and p.status == 200 and v1 in p.body
        ),
        None,
    )
    if die is None or first_v2 is None:
        return Round(
            number,
            None,
            None,
            None,
            None,
            0,
            f"v2 {'never died' if die is None else 'never served'}",
        )
    failed = sum(
        1
        for p in polls
        if die.at <= p.start and (back is None or p.end <= back) and p.status != 200
    )
    logged = rollback_logged(server, d2)
    note = f"exit code {die.exit_code}"
    if die.finished_at is None:
        note += "; no FinishedAt (container gone): timed from the die event"
    if first_v2 > die.at:
        note += "; crashed BEFORE it served (not a post-switch crash)"
    if back is None:
        note += "; v1 never came back"
    wait_gone(server, d2)
    return Round(
        number,
        live_after=first_v2 - started_wall,
        served=die.at - first_v2,
        rollback=None if back is None else back - die.at,
        detected=None if logged is None else logged - die.at,
        failed_polls=failed,
        note=note,
    )


def wait_gone(server: Server, deployment: int, timeout: float = 30) -> None:
    """Wait until the rolled-back release's container is removed (the watcher retires it)."""
    name = f"rivetr-{server.instance}-{APP}-{deployment}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(c[1] != name for c in server.app_containers(APP)):
            return
        time.sleep(0.1)
    print(f"  ! container {name} still there {timeout:g}s after its rollback")


def fmt(value: float | None) -> str:
    return "    -  " if value is None else f"{value:7.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="crashing releases (default 5)")
    parser.add_argument(
        "--crash-after",
        type=float,
        default=2.0,
        help="seconds v2 serves before it dies (default 2)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.01,
        help="seconds between polls of the proxy (default 0.01)",
    )
    parser.add_argument(
        "--save-log", type=Path, metavar="FILE", help="copy the daemon's log here before cleanup"
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 30:
        parser.error("--rounds must be from 1 to 30")
    if not 0.5 <= args.crash_after <= 8:
        parser.error("--crash-after must be from 0.5 to 8 s (inside the 10 s watch window)")
    if not 0.001 <= args.poll_interval <= 0.5:
        parser.error("--poll-interval must be from 0.001 to 0.5")
    nonce = uuid.uuid4().hex[:8]
    began = time.monotonic()
    with (
        build_leftovers() as leftovers,
        workspace("rivetr-bench-rollback-", args.save_log) as server,
    ):
        server.start()
        print(
            f"rivetr-git serve pid {server.pid}, proxy :{server.proxy_port}, instance "
            f"{server.instance}, workdir {server.workdir}; settings at their defaults "
            "(auto_rollback on, watch_window 10 s)"
        )
        with die_events(server.instance) as events:
            v1 = f"v1 {nonce}"
            repo = AppRepo.create(server.workdir / "app", v1, dockerfile=HEALTHY)
            result = server.push(repo, APP)
            if result.returncode != 0:
                raise BenchError(f"deploy of v1 failed: {failure_reason(result.output)}")
            if wait_for_content(server.proxy_port, HOST, v1, time.monotonic() + 10) is None:
                raise BenchError("the proxy never served v1")
            leftovers.record(f"rivetr-{server.instance}/{APP}:{deployment_id(result.output)}")
            print(
                f"v1 live; v2 of round k exits {args.crash_after:g}s + (k-1)/{args.rounds} "
                "* 0.5s after it starts\n"
            )
            print(
                "round  sleep s  v2 live s  v2 served s  rollback s  detected s  failed polls  note"
            )
            rounds: list[Round] = []
            for number in range(1, args.rounds + 1):
                crash_after = round(args.crash_after + 0.5 * (number - 1) / args.rounds, 3)
                r = one_round(
                    number,
                    server,
                    repo,
                    events,
                    leftovers,
                    v1,
                    nonce,
                    crash_after,
                    args.poll_interval,
                )
                rounds.append(r)
                print(
                    f"{number:5d}  {crash_after:7.3f}    {fmt(r.live_after)}      "
                    f"{fmt(r.served)}     "
                    f"{fmt(r.rollback)}     {fmt(r.detected)}  {r.failed_polls:12d}  "
                    f"{r.note}",
                    flush=True,
                )
        times = [r.rollback for r in rounds if r.rollback is not None]
        med = median(times)
        ok = len(times) == args.rounds and med < TARGET
        print(
            f"\nrollback time over {len(times)}/{args.rounds} round(s): median {med:.3f}s, "
            f"min {min(times, default=float('nan')):.3f}s, "
            f"max {max(times, default=float('nan')):.3f}s; "
            f"target median < {TARGET:g}s: {'met' if ok else 'MISSED'}"
        )
        detected = [r.detected for r in rounds if r.detected is not None]
        print(
            f"server detection (log line - exit): median {median(detected):.3f}s; the watch "
            "inspects the container every 0.5 s, and Docker's inspect reports the exit "
            "0.1-0.25 s late"
        )
        lags = [
            d.event_at - d.finished_at for d in events.seen.values() if d.finished_at is not None
        ]
        print(
            f"die event - FinishedAt: median {median(lags) * 1000:.0f} ms over {len(lags)} exit(s)"
        )
        still_v1 = http_get(server.proxy_port, HOST)
        print(
            f"after the last round the proxy serves: "
            f"{'v1' if still_v1 and v1 in still_v1[1] else still_v1}"
        )
        lines = [
            ln
            for ln in server.log_path.read_text(errors="replace").splitlines()
            if "rolled back" in ln
        ]
        print(f"\nserver log, rollbacks ({len(lines)}):")
        for line in lines[:10]:
            print(f"  {line}")
        print()
        report_server_health(server, expected_containers=1)
    print(f"total {time.monotonic() - began:.1f}s")
    return 0 if ok else 2


if __name__ == "__main__":
    bench_main("rollback", main)
