"""Client mode: how long `rivetr-git VERB` in an app's checkout takes, against OpenSSH.

What it measures
----------------
A throwaway `rivetr-git serve` (own temp data dir, loopback ports picked by the OS) with one
deployed busybox app, and a checkout of it whose `rivetr` remote points at the server. A
HOME of the benchmark's own holds the admin key as ~/.ssh/id_ed25519 and the server's host
key in ~/.ssh/known_hosts (no ssh-agent), so both clients do the same work: TCP connect,
key exchange, host key check, public-key login, one exec, output, exit status.

Each round runs, in turn (so machine noise hits all three alike):
  client  `rivetr-git releases` in the checkout (client mode: paramiko)
  ssh     `ssh -p PORT git@127.0.0.1 releases APP` (OpenSSH: the baseline)
  local   `rivetr-git --data-dir DIR releases APP` (reads SQLite on the server's machine)
and checks that the three print the same lines.

Reading the output
------------------
Median, min and max wall time per command over the rounds, and the ratio of client mode to
OpenSSH (client mode starts a Python interpreter and imports paramiko, ~0.1 s of it).

Run from the project root:  .venv/bin/python bench/client_mode.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import RIVETR, AppRepo, BenchError, median, workspace

APP = "client-bench"


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise BenchError(f"{cmd} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    opts = parser.parse_args()
    with workspace("rivetr-bench-client-") as server:
        server.start()
        repo = AppRepo.create(server.workdir / "app", "client mode")
        push = server.push(repo, APP)
        if push.returncode != 0:
            raise BenchError(f"the deploy failed: {push.output[-5:]}")
        repo.git("remote", "add", "rivetr", server.remote(APP))

        home = server.workdir / "home"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        shutil.copy(server.key, home / ".ssh" / "id_ed25519")
        host_key = (server.data_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        known = home / ".ssh" / "known_hosts"
        known.write_text(f"[127.0.0.1]:{server.ssh_port} {' '.join(host_key)}\n")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RIVETR_", "SSH_AUTH_SOCK", "SSH_AGENT_PID"))
        }
        env["HOME"] = str(home)

        commands = {
            "client": [str(RIVETR), "releases"],
            "ssh": [
                "ssh",
                "-p",
                str(server.ssh_port),
                "-o",
                "BatchMode=yes",
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
                str(home / ".ssh" / "id_ed25519"),
                "git@127.0.0.1",
                "releases",
                APP,
            ],
            "local": [str(RIVETR), "--data-dir", str(server.data_dir), "releases", APP],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(opts.rounds):
            outputs = set()
            for name, cmd in commands.items():
                elapsed, out = timed(cmd, repo.path, env)
                times[name].append(elapsed)
                outputs.add(out)
            if len(outputs) != 1:
                raise BenchError(f"the three commands printed different things: {outputs}")

        print(f"\n`releases` of one app, {opts.rounds} rounds, wall time in seconds:")
        print(f"  {'':8} {'median':>7} {'min':>7} {'max':>7}")
        for name, values in times.items():
            print(f"  {name:8} {median(values):7.3f} {min(values):7.3f} {max(values):7.3f}")
        ratio = median(times["client"]) / median(times["ssh"])
        print(f"  client mode / OpenSSH ssh: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
