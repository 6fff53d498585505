"""A compose group through day-2 operations, over real SSH and the real engine: a restart
under load loses no request and removes the old group, a restart that fails its health check
leaves the live group alone, and a rollback starts the earlier group without building.
(Limits on every service and ps:restart's new containers: tests/test_day2.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

from tests.helpers import Key, Server, docker_ids, run, wait_until
from tests.test_admin_verbs import fails, ok, verb
from tests.test_build_types import COMPOSE, compose_repo
from tests.test_day2 import live_group


class Poller:
    """GETs the app through the proxy, back to back, until stopped; keeps what failed."""

    def __init__(self, server: Server, app: str) -> None:
        self.server, self.app = server, app
        self.done = threading.Event()
        self.bodies: set[str] = set()
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.done.is_set():
            try:
                status, body = self.server.get(self.app, "/cgi-bin/env")
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            self.bodies.add(body)
            if status != 200:
                self.failures.append(f"{status} {body!r}")

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join(10)


def images(server: Server, app: str) -> set[str]:
    """The app's image tags on the engine."""
    listed = run(
        [
            "docker",
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            f"rivetr-{server.instance}/{app}",
        ]
    ).stdout
    return set(listed.split())


def test_compose_group_restarts_without_a_failed_request_and_rolls_back_from_its_images(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice, app = keys["alice"], "cm-life"
    repo = compose_repo(workdir / "group", alice, COMPOSE)
    assert repo.push(server.remote(app)).returncode == 0
    first, old_group = live_group(server, app)
    assert len(old_group) == 2  # web and worker
    built = images(server, app)

    # config:set under load: the new env reaches the routed service, no request fails
    # during the switch, and the old group (both services) is drained and removed.
    with Poller(server, app) as poller:
        out = ok(server, alice, "config:set", app, "GREETING=from-config")
    assert "Restarting cm-life" in out and "Running:" in out, out
    assert poller.failures == [], poller.failures
    assert poller.bodies == {"from-compose 5000\n", "from-config 5000\n"}  # across the switch
    second, group = live_group(server, app)
    assert second != first and len(group) == 2 and not set(group) & set(old_group)
    assert server.get(app, "/cgi-bin/env") == (200, "from-config 5000\n")
    assert wait_until(lambda: not set(old_group) & set(docker_ids("ps", server.instance)), 30)
    assert images(server, app) == built  # nothing was built

    # ps:scale would restart the group unchanged (one container per service): refused.
    refused = fails(server, alice, "ps:scale", app, "web=2")
    assert "cm-life is a compose app" in refused and "ps:restart restarts the group" in refused

    # A restart whose group fails its health check is removed; the live group keeps serving.
    ok(server, alice, "checks:set", app, "path=/no-such-page", "retries=2", "interval=0.2")
    ok(server, alice, "checks:set", app, "start_period=0", "live_interval=0")
    failed = verb(server, alice, "ps:restart", app)
    assert failed.returncode != 0
    assert "Deploy failed at health_check" in failed.stdout + failed.stderr, failed
    ok(server, alice, "checks:set", app, "path=", "retries=", "interval=", "start_period=")
    assert live_group(server, app) == (second, group)
    assert set(group) <= set(docker_ids("ps", server.instance, "status=running"))
    assert len(docker_ids("ps", server.instance, f"label=rivetr.app={app}")) == 2
    assert server.get(app, "/cgi-bin/env") == (200, "from-config 5000\n")

    # A rollback starts the first release's group again from its images: no build.
    repo.write("app/www/index.html", "hello v2\n")
    repo.commit("v2")
    assert repo.push(server.remote(app)).returncode == 0
    assert server.get(app) == (200, "hello v2\n")
    built = images(server, app)
    back = ok(server, alice, "rollback", app, first)
    assert "Rolling back cm-life" in back and "compose build" not in back, back
    assert server.get(app) == (200, "hello v1\n")
    assert images(server, app) == built
    _, group = live_group(server, app)
    assert len(group) == 2
