"""`[[cron]]` for real: a pushed job runs on schedule in a one-off container of the live
release, `cron:list` and `logs` show it, and a server restart keeps the schedule.

`* * * * *` is due at the next minute boundary, so the run test waits up to ~70 s once.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path

from tests.helpers import (
    SHELL_DOCKERFILE_HEAD,
    AppRepo,
    Key,
    Server,
    docker_ids,
    ssh_command,
    wait_until,
)
from tests.test_admin_verbs import fails, ok

CRON_APP = (
    SHELL_DOCKERFILE_HEAD
    + """\
COPY www /www
EXPOSE 5000
CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]
"""
)
EVERY_MINUTE = """\
[[cron]]
schedule = "* * * * *"
command = 'echo "cron says $GREETING from $(hostname)"; exit 4'

[[cron]]
schedule = "0 3 * * *"
command = ["echo", "nightly"]
"""


def cron_app(path: Path, key: Key, toml: str) -> AppRepo:
    repo = AppRepo(path, key, CRON_APP)
    repo.write("rivetr.toml", toml)
    repo.commit("with cron")
    return repo


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    assert process.stdout is not None
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 0.5)[0]:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen


def test_a_cron_job_runs_every_minute_and_survives_a_restart(
    own_server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    server, alice = own_server, keys["alice"]
    repo = cron_app(workdir / "app", alice, EVERY_MINUTE)
    assert repo.push(server.remote("crjobs")).returncode == 0
    ok(server, alice, "config:set", "crjobs", "GREETING=hi there")

    listing = ok(server, alice, "cron:list", "crjobs")
    assert 'cron.1  * * * * *  echo "cron says $GREETING from $(hostname)"; exit 4' in listing
    assert "cron.2  0 3 * * *  echo nightly" in listing
    assert listing.count("last: never run") == 2
    assert re.search(r"next: \d{4}-\d\d-\d\d \d\d:\d\d:00 UTC", listing)

    def ran() -> bool:
        return "last: exit 4 at" in ok(server, alice, "cron:list", "crjobs")

    follower = subprocess.Popen(  # logs -f shows cron lines as they are written
        [
            *ssh_command(alice.private).split(),
            *("-p", str(server.ssh_port), "git@127.0.0.1", "logs", "crjobs", "-f"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(ran, 75, interval=1), ok(server, alice, "cron:list", "crjobs")
        followed = _read_until(follower, b"cron.1: exited with code 4", 10)
    finally:
        follower.terminate()
        follower.wait(10)
    assert b"cron.1: cron says hi there from " in followed
    logs = ok(server, alice, "logs", "crjobs")
    assert re.search(r"Z cron\.1: cron says hi there from [0-9a-f]{12}\n", logs), logs
    assert "cron.1: exited with code 4" in logs
    # The run's container is gone, and it was not the live one.
    assert wait_until(lambda: docker_ids("ps", server.instance, "label=rivetr.oneoff=1") == [], 10)

    server.stop()
    server.start()
    listing = ok(server, alice, "cron:list", "crjobs")
    assert "cron.1  * * * * *" in listing and "last: exit 4 at" in listing
    assert "cron.2  0 3 * * *  echo nightly" in listing

    # A deploy without [[cron]] ends the schedule.
    repo.write("rivetr.toml", "")
    repo.commit("no more cron")
    assert repo.push(server.remote("crjobs")).returncode == 0
    assert wait_until(
        lambda: "has no scheduled jobs" in ok(server, alice, "cron:list", "crjobs"), 15
    )


def test_a_bad_cron_entry_fails_the_push_naming_it(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = cron_app(
        workdir / "app",
        alice,
        '[[cron]]\nschedule = "* * * * *"\ncommand = "true"\n'
        '[[cron]]\nschedule = "every day"\ncommand = "true"\n',
    )
    push = repo.push(server.remote("crbad"))
    assert push.returncode != 0
    assert "rivetr.toml: [[cron]] entry 2: schedule = 'every day' is not five cron fields" in (
        push.stderr
    )
    assert "has no scheduled jobs" in ok(server, alice, "cron:list", "crbad")
    assert "does not exist" in fails(server, keys["bob"], "cron:list", "crbad")  # not granted
