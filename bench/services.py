"""Backing services: `services:create postgres` until healthy, and backup/restore of a
~100 MB Postgres database, each against the same work done by hand on the same engine.

What it measures
----------------
A throwaway `rivetr-git serve` (own temp data dir, ports picked by the OS) whose
postgres_image is the local stand-in for the official image (scripts/build-service-images).

- create: `ssh ... services:create postgres NAME` until it returns (the server waits for
  `pg_isready` over TCP), against `docker run -d` of the same image with the same env and a
  new volume, then `docker exec pg_isready -h 127.0.0.1` polled every 0.1 s until it answers.
  Both include initdb on a fresh volume. Rounds alternate which goes first.
- backup: `ssh ... services:backup NAME` (pg_dump -Fc streamed from the container into
  data_dir/backups/NAME/, fsync'd, 0600) against `docker exec C pg_dump -Fc ... > file`.
- the same pg_dump writing to a file inside the container (no transport at all), as a floor.
- restore: `ssh ... services:restore NAME FILE` against `docker exec -i C pg_restore
  --clean --if-exists --no-owner --single-transaction ... < file` (the same flags the
  server uses) of the same file into the same database.

The database is one table filled by `generate_series` with md5 text to about --mb MB
(pg_database_size is printed). Each line is the median of --rounds rounds; the ratio is
ours / by hand; the target is <= 1.2x for backup and restore. The fastest round of each
and every round follow: pg_dump -Fc is CPU-bound, so on a host busy with other work single
rounds range from 4 s to 18 s and the medians swing between runs (backup 0.64x to 1.74x,
restore 0.76x to 1.28x over four runs at load average ~10, 2026-12-02); read the rounds.

Run from the project root:  .venv/bin/python bench/services.py [--rounds 3] [--mb 100]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, BenchError, Server, bench_main, median, run, workspace

IMAGE = "rivetr-standin/postgres:15"
USER = "rivetr"


def ssh(server: Server, *argv: str, timeout: float = 600) -> str:
    command = [
        "ssh",
        "-i",
        str(server.key),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
        "-p",
        str(server.ssh_port),
        "git@127.0.0.1",
        *argv,
    ]
    return run(command, timeout=timeout)


def timed(fn: object, *args: object) -> float:
    started = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - started


def by_hand_create(label: str, name: str) -> None:
    run(["docker", "volume", "create", "--label", label, name])
    run(
        [
            "docker", "run", "-d", "--init", "--name", name, "--label", label,
            "-e", "POSTGRES_PASSWORD=benchpw", "-e", f"POSTGRES_USER={USER}",
            "-e", f"POSTGRES_DB={name}", "-e", "PGDATA=/var/lib/postgresql/data/pgdata",
            "-v", f"{name}:/var/lib/postgresql/data", IMAGE,
        ]
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["docker", "exec", name, "pg_isready", "-q", "-h", "127.0.0.1", "-U", USER],
            capture_output=True,
        )
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise BenchError(f"{name} did not become ready by hand")


def remove_by_hand(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)


def bench_create(server: Server, rounds: int) -> tuple[float, float]:
    ours, hand = [], []
    label = f"rivetr-bench.run={server.instance}"
    for i in range(rounds):
        name = f"bsvc{i}"
        for first in (0, 1) if i % 2 == 0 else (1, 0):
            if first == 0:
                ours.append(timed(ssh, server, "services:create", "postgres", name))
                ssh(server, "services:destroy", name, "--confirm", name, "--purge-data")
            else:
                hand_name = f"rivetr-bench-{server.instance}-{name}"
                try:
                    hand.append(timed(by_hand_create, label, hand_name))
                finally:
                    remove_by_hand(hand_name)
    return median(ours), median(hand)


def fill(container: str, db: str, mb: int) -> int:
    rows = mb * 1024 * 1024 // 170  # about 170 bytes per row on disk, here
    sql = (
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5(random()::text) || "
        f"md5(random()::text) || md5(random()::text) AS payload FROM generate_series(1, {rows}) g"
    )
    run(["docker", "exec", container, "psql", "-q", "-U", USER, "-d", db, "-c", sql], timeout=600)
    size = run(
        ["docker", "exec", container, "psql", "-tA", "-U", USER, "-d", db, "-c",
         f"SELECT pg_database_size('{db}')"]
    )  # fmt: skip
    return int(size.strip())


def dump_by_hand(container: str, db: str, out: Path) -> None:
    with out.open("wb") as f:
        code = subprocess.run(
            ["docker", "exec", container, "pg_dump", "-Fc", "-U", USER, "-d", db], stdout=f
        ).returncode
    if code != 0:
        raise BenchError("pg_dump by hand failed")


def dump_inside(container: str, db: str) -> None:
    run(["docker", "exec", container, "sh", "-c",
         f"pg_dump -Fc -U {USER} -d {db} -f /tmp/floor.dump && rm /tmp/floor.dump"],
        timeout=600)  # fmt: skip


def restore_by_hand(container: str, db: str, dump: Path) -> None:
    with dump.open("rb") as f:
        code = subprocess.run(
            ["docker", "exec", "-i", container, "pg_restore", "--clean", "--if-exists",
             "--no-owner", "--single-transaction", "--exit-on-error", "-U", USER, "-d", db],
            stdin=f,
        ).returncode  # fmt: skip
    if code != 0:
        raise BenchError("pg_restore by hand failed")


def bench_dumps(server: Server, rounds: int, mb: int) -> None:
    name = "bsvdb"
    ssh(server, "services:create", "postgres", name)
    container = f"rivetr-{server.instance}.svc.{name}"
    size = fill(container, name, mb)
    print(f"database: pg_database_size {size / 1e6:.1f} MB")
    backups = server.data_dir / "backups" / name
    by_hand = server.workdir / "by-hand.dump"
    ours_b, hand_b, ours_r, hand_r, floor = [], [], [], [], []
    for i in range(rounds):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for which in order:
            if which == 0:
                ours_b.append(timed(ssh, server, "services:backup", name))
            else:
                hand_b.append(timed(dump_by_hand, container, name, by_hand))
        floor.append(timed(dump_inside, container, name))
        newest = sorted(p.name for p in backups.iterdir())[-1]
        for which in order:
            if which == 0:
                ours_r.append(timed(ssh, server, "services:restore", name, newest))
            else:
                hand_r.append(timed(restore_by_hand, container, name, by_hand))
    ours_size = (backups / newest).stat().st_size
    print(f"dump: ours {ours_size / 1e6:.1f} MB, by hand {by_hand.stat().st_size / 1e6:.1f} MB")
    line("backup (pg_dump -Fc)", ours_b, hand_b)
    line("restore (pg_restore)", ours_r, hand_r)
    print(f"  (pg_dump -Fc to a file inside the container, no transport: {median(floor):.2f} s)")
    ssh(server, "services:destroy", name, "--confirm", name, "--purge-data")


def line(what: str, ours_all: list[float], hand_all: list[float]) -> None:
    """Medians and their ratio, then the fastest of each (less sensitive to a busy host)."""
    ours, hand = median(ours_all), median(hand_all)
    ratio = ours / hand if hand else float("inf")
    verdict = "ok" if ratio <= 1.2 else "over the 1.2x target"
    print(f"{what:<26} ours {ours:7.2f} s   by hand {hand:7.2f} s   {ratio:.2f}x  {verdict}")
    best = min(ours_all) / min(hand_all)
    print(
        f"{'':<26} fastest: ours {min(ours_all):.2f} s, by hand {min(hand_all):.2f} s, {best:.2f}x"
    )
    print(f"{'':<26} rounds: ours {fmt(ours_all)}; by hand {fmt(hand_all)}")


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    run([str(ROOT / "scripts" / "build-service-images")], timeout=900)
    with workspace("rivetr-bench-svc-") as server:
        server.start(settings={"RIVETR_POSTGRES_IMAGE": IMAGE})
        try:
            ours, hand = bench_create(server, args.rounds)
            print(f"{'create to healthy':<26} ours {ours:7.2f} s   by hand {hand:7.2f} s   "
                  f"{ours / hand:.2f}x")  # fmt: skip
            bench_dumps(server, args.rounds, args.mb)
        finally:
            # Volumes and networks of services outlive the workspace's container clean-up.
            for kind in ("volume", "network"):
                names = run(["docker", kind, "ls", "-q", "--filter",
                             f"label=rivetr.instance={server.instance}"]).split()  # fmt: skip
                if names:
                    subprocess.run(["docker", kind, "rm", "-f" if kind == "volume" else "--",
                                    *names], capture_output=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    bench_main("services", main)
