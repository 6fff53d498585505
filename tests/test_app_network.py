"""Each app on its own network: no app reaches another's containers except through the
proxy. Real daemon, real SSH, real engine."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Key, Server, docker_ids, run
from tests.test_admin_verbs import ok, shell_app, verb


def networks_of(container: str) -> dict[str, str]:
    """Network name -> the container's address on it."""
    data = json.loads(run(["docker", "inspect", container]).stdout)[0]
    return {name: net["IPAddress"]
            for name, net in data["NetworkSettings"]["Networks"].items()}


def fetch(server: Server, key: Key, app: str, address: str) -> tuple[int, str]:
    """A one-off `run` of APP asking `address` port 5000 for /index.html (busybox nc, 3 s
    deadline; the static busybox's wget crashes here): exit code and output."""
    script = f'printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" | nc -w 3 {address} 5000'
    result = verb(server, key, "run", app, "sh", "-c", script)
    return result.returncode, result.stdout


def test_apps_cannot_reach_each_other_and_destroy_removes_the_network(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    for app in ("mxneta", "mxnetb"):
        repo = shell_app(workdir / app, alice)
        assert repo.push(server.remote(app)).returncode == 0
    [b_container] = docker_ids("ps", server.instance, "label=rivetr.app=mxnetb")
    b_networks = networks_of(b_container)
    [b_address] = b_networks.values()

    code, said = fetch(server, alice, "mxnetb", b_address)  # B's own one-off run reaches B
    assert code == 0 and "hello v1" in said, said
    code, said = fetch(server, alice, "mxneta", b_address)  # A's does not
    assert code != 0 and "hello" not in said, said
    assert server.get("mxneta", "/index.html") == (200, "hello v1\n")  # the proxy still does
    b_network = f"rivetr-{server.instance}-mxnetb"
    assert list(b_networks) == [b_network], b_networks  # not on the default bridge
    labels = json.loads(run(["docker", "network", "inspect", b_network]).stdout)[0]["Labels"]
    assert labels == {"rivetr.instance": server.instance, "rivetr.app": "mxnetb"}

    ok(server, alice, "apps:destroy", "mxnetb", "--confirm", "mxnetb")
    gone = run(["docker", "network", "inspect", b_network], check=False)
    assert gone.returncode != 0


def test_start_up_removes_networks_of_apps_that_are_gone(own_server: Server) -> None:
    prefix = f"rivetr-{own_server.instance}-"
    label = ["--label", f"rivetr.instance={own_server.instance}", "--label"]
    own_server.cli("apps:create", "mxalive")
    for name, app in (("mxgone", "mxgone"), ("mxalive", "mxalive"),
                      ("mxgone-7_default", "mxgone")):  # the last is not an app network
        run(["docker", "network", "create", *label, f"rivetr.app={app}", prefix + name])
    own_server.stop()
    own_server.start()
    left = run(["docker", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
    assert prefix + "mxgone" not in left
    assert prefix + "mxalive" in left and prefix + "mxgone-7_default" in left
