"""Each app on its own network: no app reaches another's containers except through the
proxy. Real daemon, real SSH, real engine."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import docker.errors
import pytest

from rivetr_git.errors import ConfigError, RuntimeOperationError
from rivetr_git.runtime.base import ContainerSpec
from rivetr_git.runtime.docker import DockerRuntime
from rivetr_git.runtime.docker_routes import host_routes
from rivetr_git.settings import load_settings
from tests.helpers import Key, Server, docker_ids, run
from tests.test_admin_verbs import ok, shell_app, verb


def networks_of(container: str) -> dict[str, str]:
    """Network name -> the container's address on it."""
    data = json.loads(run(["docker", "inspect", container]).stdout)[0]
    return {name: net["IPAddress"] for name, net in data["NetworkSettings"]["Networks"].items()}


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
    inspected = json.loads(run(["docker", "network", "inspect", b_network]).stdout)[0]
    assert inspected["Labels"] == {"rivetr.instance": server.instance, "rivetr.app": "mxnetb"}
    [config] = inspected["IPAM"]["Config"]  # a /26 of app_networks, not the engine's pools
    subnet = ipaddress.IPv4Network(config["Subnet"])
    assert subnet.prefixlen == 26 and subnet.subnet_of(ipaddress.IPv4Network("10.213.0.0/16"))

    ok(server, alice, "apps:destroy", "mxnetb", "--confirm", "mxnetb")
    gone = run(["docker", "network", "inspect", b_network], check=False)
    assert gone.returncode != 0


def test_start_up_removes_networks_of_apps_that_are_gone(own_server: Server) -> None:
    prefix = f"rivetr-{own_server.instance}-"
    label = ["--label", f"rivetr.instance={own_server.instance}", "--label"]
    own_server.cli("apps:create", "mxalive")
    for name, app in (
        ("mxgone", "mxgone"),
        ("mxalive", "mxalive"),
        ("mxgone-7_default", "mxgone"),
    ):  # the last is not an app network
        run(["docker", "network", "create", *label, f"rivetr.app={app}", prefix + name])
    own_server.stop()
    own_server.start()
    left = run(["docker", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
    assert prefix + "mxgone" not in left
    assert prefix + "mxalive" in left and prefix + "mxgone-7_default" in left


class _FakeNetworksApi:
    """Fake (pure logic): the engine's network list, nothing else."""

    def __init__(self, subnets: list[str]) -> None:
        self._subnets = subnets

    def networks(self) -> list[dict[str, object]]:
        return [{"Name": "bridge", "IPAM": {"Config": [{"Subnet": s}]}} for s in self._subnets]


class _FakeClient:
    def __init__(self, subnets: list[str]) -> None:
        self.api = _FakeNetworksApi(subnets)


def test_free_subnet_skips_every_overlapping_network_and_says_when_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = DockerRuntime(_FakeClient(["172.17.0.0/16", "10.213.0.96/27", "fd00::/64"]))
    # 10.213.0.0/26 is routed by the host (another engine's bridge), not this engine's.
    monkeypatch.setattr(runtime, "host_routes", lambda: [ipaddress.IPv4Network("10.213.0.0/26")])
    assert runtime._free_subnet() is None  # no pool: the engine's own pools
    runtime.network_pool = ipaddress.IPv4Network("10.213.0.0/24")
    assert runtime._free_subnet() == "10.213.0.128/26"  # .64/26 overlaps .96/27
    runtime.network_pool = ipaddress.IPv4Network("10.213.0.0/25")
    with pytest.raises(RuntimeOperationError, match=r"app_networks 10\.213\.0\.0/25 is full"):
        runtime._free_subnet()


def test_host_routes_are_read_from_the_kernel_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "br-1\t0000D50A\t00000000\t0001\t0\t0\t0\tC0FFFFFF\t0\t0\t0\n"
    )
    assert host_routes(table) == [
        ipaddress.IPv4Network("172.17.0.0/16"),
        ipaddress.IPv4Network("10.213.0.0/26"),
    ]
    assert host_routes(tmp_path / "missing") == []


def test_app_networks_setting_takes_a_private_range_or_nothing() -> None:
    assert load_settings(overrides={"app_networks": ""}).app_networks == ""
    for bad in ("8.8.0.0/16", "10.0.0.0/28", "nonsense", "fd00::/64"):
        with pytest.raises(ConfigError):
            load_settings(overrides={"app_networks": bad})


def test_a_subnet_taken_meanwhile_is_retried_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deploys (or servers) starting apps at once pick the same first free /26, and the
    engine refuses all but one ("Pool overlaps"): a retry must try other free ones, not the
    same one again until it gives up."""
    runtime = DockerRuntime(_FakeClient([]))
    runtime.network_pool = ipaddress.IPv4Network("10.213.0.0/24")
    monkeypatch.setattr(runtime, "host_routes", list)
    tried: list[str] = []

    def create_network(name: str, ipam: object = None, **kw: object) -> None:
        subnet = ipam["Config"][0]["Subnet"]  # type: ignore[index]
        tried.append(subnet)
        if subnet == "10.213.0.0/26":  # held by a start we do not see yet
            raise docker.errors.APIError("Pool overlaps with other one on this address space")

    monkeypatch.setattr(runtime._client.api, "create_network", create_network, raising=False)
    runtime._create_network(ContainerSpec(name="c", image="i", port=5000, network="n"))
    assert tried[0] == "10.213.0.0/26" and tried[-1] != "10.213.0.0/26"
