"""What a pushed compose file may say (pure logic, no Docker): normalising (anchors, extends,
interpolation from the pushed .env only), the allowlist, and the server's settings on top."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
import yaml

from rivetr_git.admin.app_settings import COMPOSE_ALLOW, parse_assignments
from rivetr_git.errors import BuildFailed, StartFailed, ValidationError
from rivetr_git.pipeline.builders.compose import Limits, process_env, rewrite, write_file
from rivetr_git.pipeline.builders.compose_normalise import normalise
from rivetr_git.pipeline.builders.compose_policy import check
from rivetr_git.runtime.base import Runtime


def tree(root: Path, compose: str, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "compose.yaml").write_text(compose)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def checked(root: Path, compose: str, **files: str) -> dict[str, Any]:
    tree(root, compose, **files)
    data = normalise(root, "compose.yaml")
    check(data, root)
    return data


def refused(root: Path, compose: str, match: str, **files: str) -> str:
    with pytest.raises(BuildFailed, match=match) as info:
        checked(root, compose, **files)
    return info.value.reason


WEB = "services:\n  web:\n    build: .\n"


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("privileged: true", '"privileged: true"'),
        ("pid: host", '"pid: host"'),
        ("ipc: host", '"ipc: host"'),
        ("uts: host", '"uts: host"'),
        ("userns_mode: host", '"userns_mode: host"'),
        ("network_mode: host", '"network_mode: host"'),
        ("network_mode: 'container:other'", '"network_mode: container:other"'),
        ("cap_add: [SYS_ADMIN]", '"cap_add: ["SYS_ADMIN"]"'),
        ("devices: ['/dev/sda:/dev/sda']", '"devices: ["/dev/sda:/dev/sda"]"'),
        ("security_opt: ['apparmor:unconfined']", '"security_opt'),
        ("sysctls: {net.ipv4.ip_forward: 1}", '"sysctls'),
        ("cgroup_parent: /", '"cgroup_parent: /"'),
    ],
)
def test_host_access_keys_are_refused_with_service_key_and_advice(
    tmp_path: Path, line: str, shown: str
) -> None:
    reason = refused(tmp_path, WEB + f"    {line}\n", "compose apps run without host access")
    assert reason.startswith(f"service web: {shown}"), reason
    assert "is not allowed" in reason


@pytest.mark.parametrize(
    ("line", "advice"),
    [
        ("volumes_from: [db]", "volumes_from reaches into other containers"),
        ("external_links: [other]", "external_links"),
        ("ulimits: {nofile: 1048576}", "ulimits are the server's"),
        ("mem_limit: 8g", "limits:set"),
        ("deploy: {resources: {}}", "limits:set"),
        ("secrets: [key]", "config:set"),
        ("made_up_key: 1", "not on the list of keys"),
        ("labels: {rivetr.app: other}", "labels starting with rivetr."),
        ("image: rivetr-abc/other:3", "images of this server's apps"),
        ("build: {context: ., network: host}", "builds run on the default network"),
    ],
)
def test_other_keys_off_the_allowlist_are_refused(tmp_path: Path, line: str, advice: str) -> None:
    compose = (
        WEB + f"    {line}\n"
        if not line.startswith(("build", "image"))
        else f"services:\n  web:\n    build: .\n  x:\n    {line}\n"
    )
    assert advice in refused(tmp_path, compose, "is not allowed")


@pytest.mark.parametrize(
    "mount",
    [
        "'/:/host'",
        "/var/run/docker.sock:/var/run/docker.sock",
        "./data:/data",
        "~/x:/x",
        "../up:/up",
        "'${DIR}:/d'",
        "{type: bind, source: /, target: /host}",
        "{type: volume, source: data, target: /d, bind: {propagation: shared}}",
        "{type: npipe, source: x, target: /x}",
    ],
)
def test_bind_mounts_are_refused_in_short_and_long_syntax(tmp_path: Path, mount: str) -> None:
    compose = WEB + f"    volumes: [{mount}]\nvolumes:\n  data:\n"
    refused(
        tmp_path,
        compose,
        r"service web: \"volumes.*is not allowed; compose apps run "
        "without host access",
        **{".env": "DIR=/\n"},
    )


def test_named_anonymous_and_tmpfs_volumes_are_allowed(tmp_path: Path) -> None:
    checked(
        tmp_path,
        WEB
        + """\
    volumes:
      - data:/data
      - /cache
      - {type: volume, source: data, target: /long, read_only: true}
      - {type: volume, target: /anonymous}
      - {type: tmpfs, target: /tmp, tmpfs: {size: 1000}}
    tmpfs: [/run]
volumes:
  data:
  labelled: {driver: local, labels: {a: b}}
""",
    )
    refused(
        tmp_path / "undeclared", WEB + "    volumes: [other:/o]\n", "volume 'other' is not declared"
    )


@pytest.mark.parametrize(
    ("top", "match"),
    [
        ("volumes:\n  data: {external: true}\n", r"volume data: \"external: true\".*belong to"),
        (
            "volumes:\n  data: {driver_opts: {type: none, o: bind, device: /}}\n",
            r"volume data: \"driver_opts",
        ),
        ("volumes:\n  data: {name: rivetr-x-other_data}\n", r"volume data: \"name"),
        ("volumes:\n  data: {driver: nfs}\n", r"volume data: \"driver: nfs\""),
        ("networks:\n  n: {external: true}\n", r"network n: \"external: true\""),
        ("networks:\n  n: {driver: host}\n", r"network n: \"driver: host\""),
        ("networks:\n  n: {ipam: {config: [{subnet: 10.0.0.0/8}]}}\n", r"network n: \"ipam"),
        ("secrets:\n  key: {file: /etc/shadow}\n", r"top level: \"secrets"),
    ],
)
def test_top_level_volumes_and_networks_must_be_the_apps_own(
    tmp_path: Path, top: str, match: str
) -> None:
    refused(tmp_path, WEB + top, match)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        ("/", "build context '/' is outside the pushed tree"),
        ("..", "build context '..' leads outside"),
        ("sub/../..", "leads outside"),
        ("link", "leads outside"),  # a symlink to /
        ("https://example.com/repo.git", "outside the pushed tree"),
        ("{context: ., dockerfile: ../../etc/Dockerfile}", "build dockerfile .* leads outside"),
        ("{context: ., dockerfile: /etc/passwd}", "outside the pushed tree"),
    ],
)
def test_build_context_and_dockerfile_stay_inside_the_tree(
    tmp_path: Path, build: str, match: str
) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "link").symlink_to("/")
    reason = refused(root, f"services:\n  web:\n    build: {build}\n", match)
    assert reason.startswith("service web: build")


@pytest.mark.parametrize("name", ["../../../../tmp/escape", "a/b", "web app", '""'])
def test_service_names_are_compose_names(tmp_path: Path, name: str) -> None:
    """rivetr names files after services (compose_stages writes .rivetr.<service>.Dockerfile
    into the build context): a name with a slash would write outside the tree."""
    reason = refused(
        tmp_path / "t", f"services:\n  {name!r}:\n    build: .\n", "a service name may use"
    )
    assert "rename it" in reason


@pytest.mark.parametrize("env_file", ["/etc/passwd", "../secret.env", "link/etc/passwd"])
def test_env_files_stay_inside_the_tree(tmp_path: Path, env_file: str) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "link").symlink_to("/")
    refused(root, WEB + f"    env_file: {env_file}\n", "service web: env_file .* outside")


def test_anchors_and_merge_keys_are_resolved_before_the_check(tmp_path: Path) -> None:
    compose = """\
x-common: &common
  privileged: true
services:
  web:
    <<: *common
    build: .
"""
    refused(tmp_path, compose, r"service web: \"privileged: true\"")
    data = checked(
        tmp_path / "ok",
        """\
x-env: &env {A: "1"}
services:
  web: {build: ., environment: *env}
""",
    )
    assert data["services"]["web"]["environment"] == {"A": "1"} and "x-env" not in data


def test_extends_is_resolved_inside_the_tree_only(tmp_path: Path) -> None:
    data = checked(
        tmp_path / "ok",
        """\
services:
  base: {build: ., environment: [A=1]}
  web: {extends: base, environment: [B=2]}
  api: {extends: {file: sub/common.yaml, service: api}}
""",
        **{
            "sub/common.yaml": "services:\n  api: {build: ./app, env_file: vars.env}\n",
            "sub/app/Dockerfile": "",
            "sub/vars.env": "",
        },
    )
    assert data["services"]["web"] == {"build": ".", "environment": {"A": "1", "B": "2"}}
    assert data["services"]["api"]["build"] == {"context": "sub/app"}
    assert data["services"]["api"]["env_file"] == ["sub/vars.env"]
    # What the extended service says is checked like the rest.
    refused(
        tmp_path / "pid",
        WEB + "  x: {extends: {file: base.yaml, service: b}}\n",
        r"service x: \"pid: host\"",
        **{"base.yaml": "services:\n  b: {image: a, pid: host}\n"},
    )
    refused(
        tmp_path / "abs",
        WEB + "  x: {extends: {file: /etc/compose.yaml, service: b}}\n",
        "extends file '/etc/compose.yaml' is outside",
    )
    refused(
        tmp_path / "up",
        WEB + "  x: {extends: {file: ../c.yaml, service: b}}\n",
        "extends file '../c.yaml' leads outside",
    )
    refused(tmp_path / "loop", "services:\n  a: {extends: b}\n  b: {extends: a}\n", "extends loops")
    refused(tmp_path / "inc", "include: [other.yaml]\n" + WEB, "include.* is not supported")


def test_interpolation_reads_the_pushed_env_file_and_never_the_servers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIVETR_SECRET_OF_THE_SERVER", "leaked")
    data = checked(
        tmp_path,
        WEB
        + """\
    environment:
      FROM_SERVER: "${RIVETR_SECRET_OF_THE_SERVER}"
      FROM_TREE: "$NAME-${NAME}"
      DEFAULTED: "${MISSING:-fallback}${EMPTY:-x}${EMPTY-y}"
      LITERAL: "$$HOME"
""",
        **{".env": "NAME=tree\nEMPTY=\n# comment\n"},
    )
    assert data["services"]["web"]["environment"] == {
        "FROM_SERVER": "",
        "FROM_TREE": "tree-tree",
        "DEFAULTED": "fallbackx",
        "LITERAL": "$HOME",
    }
    refused(
        tmp_path / "req",
        WEB + "    image: ${IMAGE:?set IMAGE in .env}\n",
        "variable IMAGE is required: set IMAGE in .env",
    )
    root = tree(tmp_path / "link", WEB + "    image: $X\n")
    (root / ".env").symlink_to("/etc/hostname")
    with pytest.raises(BuildFailed, match=r"\.env '\.env' leads outside"):
        normalise(root, "compose.yaml")


class FakeRuntime:
    """Just the attributes process_env reads (pure logic, no engine)."""

    engine_env: ClassVar[dict[str, str]] = {"DOCKER_HOST": "unix:///run/podman.sock"}
    container_ulimits: ClassVar[dict[str, int]] = {"nofile": 10000}


def test_the_server_settings_go_on_top_and_values_stay_out_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = checked(
        tmp_path,
        WEB
        + """\
    ports: ["0.0.0.0:80:5000"]
    restart: always
    logging: {driver: syslog}
    environment: [SECRET, FROM_SERVER, "PLAIN=$$5"]
  worker: {build: ., environment: [SECRET, OTHER]}
""",
    )
    out, _ = rewrite(
        data,
        "compose.yaml",
        "inst",
        "shop",
        3,
        None,
        5000,
        ["SECRET"],
        Limits(cpus=0.5, memory=64, ulimits={"nofile": 10}),
    )
    web, worker = out["services"]["web"], out["services"]["worker"]
    assert web["ports"] == ["127.0.0.1::5000"] and web["restart"] == "no"
    assert "logging" not in web and web["init"] is True
    assert (web["mem_limit"], web["memswap_limit"], web["cpus"]) == (64, 64, 0.5)
    assert web["ulimits"] == {"nofile": {"soft": 10, "hard": 10}}
    # Names only; a bare name that is not the app's would have read the server's env.
    assert web["environment"] == {"SECRET": None, "PLAIN": "$$5", "PORT": "5000"}
    assert worker["environment"] == {} and worker["restart"] == "no"

    monkeypatch.setenv("RIVETR_MASTER_KEY_FILE", "/secret")
    runtime = cast(Runtime, FakeRuntime())
    env = process_env(runtime, {"SECRET": "s3cret"})
    assert env["SECRET"] == "s3cret" and env["DOCKER_HOST"] == "unix:///run/podman.sock"
    assert "RIVETR_MASTER_KEY_FILE" not in env and set(env) <= {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "DOCKER_HOST",
        "SECRET",
    }
    with pytest.raises(StartFailed, match="env var COMPOSE_FILE, PATH cannot reach"):
        process_env(runtime, {"PATH": "/x", "COMPOSE_FILE": "y"})
    assert os.environ["RIVETR_MASTER_KEY_FILE"] == "/secret"


def test_yaml_that_is_no_compose_file_is_refused(tmp_path: Path) -> None:
    refused(tmp_path / "a", "services: [", "not valid YAML")
    refused(tmp_path / "b", "services: {}\n", "defines no services")
    refused(tmp_path / "c", "services: {web: [a]}\n", "a service must be a mapping")
    assert yaml.safe_load(WEB)  # the fixture itself is fine


def test_only_the_bind_mounts_an_admin_named_get_through(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        WEB
        + """\
    volumes:
      - /srv/up:/up:ro
      - {type: bind, source: /srv/rw, target: /rw}
""",
    )
    data = normalise(root, "compose.yaml")
    check(data, root, ["/srv/up:/up:ro", "/srv/rw:/rw"])
    for binds in (["/srv/up:/up:ro"], ["/srv/up:/other", "/srv/rw:/rw"], ["/srv/rw:/rw:ro"]):
        with pytest.raises(BuildFailed, match="compose:allow"):
            check(data, root, binds)


@pytest.mark.parametrize(
    "value", ["relative:/x", "/a/../b:/x", "/a:x", "/a:/x:rw", "/a b:/x", "/a:/x,oops"]
)
def test_compose_allow_takes_absolute_host_container_pairs_only(value: str) -> None:
    with pytest.raises(ValidationError, match="HOST:CONTAINER"):
        parse_assignments([f"binds={value}"], COMPOSE_ALLOW)
    assert parse_assignments(["binds=/srv/a:/a:ro, /srv/b:/b"], COMPOSE_ALLOW) == {
        "compose_binds": "/srv/a:/a:ro,/srv/b:/b"
    }
    assert parse_assignments(["binds="], COMPOSE_ALLOW) == {"compose_binds": None}


def test_anchors_that_expand_exponentially_are_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    refused(
        tmp_path,
        "x-bomb:\n" + "".join(f"  {line}\n" for line in lines) + WEB,
        "expands to more than 100000 values",
    )


def test_the_rewritten_file_never_follows_a_pushed_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "host-file"
    outside.write_text("the host's\n")
    source = tmp_path / "src"
    source.mkdir()
    (source / ".rivetr-compose.json").symlink_to(outside)
    write_file(source, {"services": {}})
    assert outside.read_text() == "the host's\n"
    assert (source / ".rivetr-compose.json").read_text() == '{"services": {}}'
