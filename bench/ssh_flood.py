"""A legitimate push's time while 1,000 unauthenticated SSH connections are held open.

What it measures
----------------
A throwaway `rivetr-git serve` with default settings and a tiny busybox app. Each round
makes a new commit and pushes it twice to a branch that does not deploy (so the time is
the SSH edge and git, not Docker), interleaved, order alternating per round:

* baseline: nothing else is going on.
* flood:    a flooder holds 1,000 TCP connections to the SSH port from another loopback
  address (127.0.0.3; all of 127/8 reaches the server), each having read the server's
  banner (or its refusal) and sending nothing, i.e. unauthenticated connections. Connections
  the server closes are reopened, so the flood keeps knocking for the whole push.

The pushes come from 127.0.0.1. The summary gives the median push time of each side and
the ratio flood/baseline (target: close to 1.0: a flood from one address does not slow
anyone else down), plus what the server did with the flood (connections it let start a
handshake vs. refused at once, per round; the daemon's open file descriptors during the
flood) and its log lines about refusals.
With --no-limits the daemon runs with the caps and throttling set out of the way
(how the receiver behaved before issue 10), for comparison.

Run from the project root:  .venv/bin/python bench/ssh_flood.py [--rounds 5] [--no-limits]
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from harness import (
    AppRepo,
    BenchError,
    Server,
    bench_main,
    fd_count,
    median,
    watch_push,
    workspace,
)

FLOOD_SOURCE = "127.0.0.3"
UNLIMITED = {
    "RIVETR_SSH_MAX_STARTUPS": "100000",
    "RIVETR_SSH_MAX_STARTUPS_PER_SOURCE": "100000",
    "RIVETR_SSH_HANDSHAKE_RATE": "0",
}


@dataclass
class FloodStats:
    opened: int = 0  # TCP connections made
    banners: int = 0  # ... that got the server's SSH version line (a handshake started)
    refused: int = 0  # ... that got "Exceeded MaxStartups" or were closed at once
    closed_later: int = 0  # ... closed after the banner (login grace time)


class Flood:
    """Holds `size` connections from FLOOD_SOURCE until stopped; reopens closed ones."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.size = size
        self.stats = FloodStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        deadline = time.monotonic() + 30
        while self.stats.opened < self.size and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _open(self, sel: selectors.DefaultSelector) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((FLOOD_SOURCE, 0))
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", self.port))
        sel.register(sock, selectors.EVENT_READ, data=b"")
        self.stats.opened += 1

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            while not self._stop.is_set():
                while len(sel.get_map()) < self.size and not self._stop.is_set():
                    self._open(sel)
                for key, _ in sel.select(0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(256)
                    except OSError:
                        data = b""
                    if data.startswith(b"SSH-"):
                        self.stats.banners += 1
                        sel.modify(sock, selectors.EVENT_READ, data=b"started")
                        continue  # hold it, silent, as an unauthenticated client
                    if data and not data.startswith(b"Exceeded"):
                        continue  # the rest of the server's key exchange offer
                    if key.data:
                        self.stats.closed_later += 1
                    else:
                        self.stats.refused += 1
                    sel.unregister(sock)
                    sock.close()
                    time.sleep(0.005)  # reopen (<= 200/s), not a busy loop on a shared core
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()


def timed_push(server: Server, repo: AppRepo) -> float:
    """Seconds one `git push` of HEAD to main takes (main does not deploy here)."""
    started = time.monotonic()
    result = watch_push(server.start_push(repo, "flood"), started, timeout=120)
    if result.returncode != 0:
        raise BenchError("push failed:\n" + "\n".join(result.output[-10:]))
    return result.exited


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5, max 20)")
    parser.add_argument(
        "--connections",
        type=int,
        default=1000,
        help="connections the flood holds (default 1000, max 5000)",
    )
    parser.add_argument(
        "--no-limits",
        action="store_true",
        help="run the daemon with the SSH caps and throttling out of the way",
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 1 <= args.connections <= 5000:
        parser.error("--rounds must be 1 to 20 and --connections 1 to 5000")
    began = time.monotonic()
    with workspace("rivetr-bench-flood-") as server:
        server.start(
            settings={"RIVETR_DEPLOY_BRANCH": "live", **(UNLIMITED if args.no_limits else {})}
        )
        print(
            f"rivetr-git serve pid {server.pid}, ssh :{server.ssh_port}; pushes to "
            f"'main', which does not deploy (deploy_branch=live); flood from {FLOOD_SOURCE}"
            f"{' (limits off)' if args.no_limits else ''}"
        )
        repo = AppRepo.create(server.workdir / "app", "warm-up")
        timed_push(server, repo)  # creates the app: not counted
        nonce = uuid.uuid4().hex[:8]
        base: list[float] = []
        flood: list[float] = []
        print(
            f"{'round':>5} {'baseline s':>10} {'flood s':>8}   flood: {'started':>7} "
            f"{'refused':>8} {'closed later':>12} {'opened':>7} {'server fds':>10}"
        )
        for n in range(1, args.rounds + 1):
            order = ("base", "flood") if n % 2 else ("flood", "base")
            stats = FloodStats()
            fds = 0
            for side in order:
                repo.commit(f"round {n} {side} {nonce}")
                if side == "base":
                    base.append(timed_push(server, repo))
                    continue
                with Flood(server.ssh_port, args.connections) as f:
                    time.sleep(0.5)  # let it settle: the server has seen all of them
                    flood.append(timed_push(server, repo))
                    stats = f.stats
                    fds = fd_count(server.pid)
            print(
                f"{n:>5} {base[-1]:>10.3f} {flood[-1]:>8.3f}          {stats.banners:>7} "
                f"{stats.refused:>8} {stats.closed_later:>12} {stats.opened:>7} {fds:>10}"
            )
        ratio = median(flood) / median(base)
        print(
            f"\nmedian push: baseline {median(base):.3f}s, under a {args.connections}-"
            f"connection flood {median(flood):.3f}s; ratio flood/baseline {ratio:.2f}"
        )
        time.sleep(11)  # one refusal-log interval, so the summary line is written
        lines = [
            ln
            for ln in server.log_path.read_text(errors="replace").splitlines()
            if "refused" in ln and "SSH connection" in ln
        ]
        print(f"server log: {len(lines)} line(s) about refused connections")
        for line in lines[-3:]:
            print(f"  {line[:200]}")
    print(f"total {time.monotonic() - began:.1f}s")
    return 0


if __name__ == "__main__":
    bench_main("ssh_flood", main)
