"""Pure logic: names, exec commands, routes, settings and public keys. No Docker, no network."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from rivetr_git.admin.ssh_keys import parse_public_key
from rivetr_git.errors import ConfigError, ValidationError
from rivetr_git.names import validate_app_name
from rivetr_git.proxy.routes import RouteTable, Upstream, normalize_host
from rivetr_git.receiver.commands import GitCommand, git_protocol, parse_command
from rivetr_git.settings import SETTINGS, Settings, load_settings, settings_help

README = Path(__file__).resolve().parent.parent / "README.md"

# --- app names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hello", "my-api", "a", "a1", "a-b-c", "a" * 63, "x" + "9" * 62])
def test_valid_app_names_are_returned_unchanged(name: str) -> None:
    assert validate_app_name(name) == name


BAD_APP_NAMES = [
    "../x",
    "-x",
    "A",
    "Hello",
    "a'b",
    'a"b',
    "",
    "a.b",
    "a/b",
    "x-",
    "a" * 64,
    " a",
    "a ",
    "a\n",
    "\na",
    "a\x00",
    "1abc",
    "a_b",
    "a\\b",
    "..",
    ".",
    "\u0430pp",  # Cyrillic a
    "app\u0131",  # dotless i
    "\uff41pp",  # fullwidth a
    "\u212a",  # Kelvin sign, lower()s to 'k'
    "caf\u00e9",
]


@pytest.mark.parametrize("name", BAD_APP_NAMES)
def test_invalid_app_names_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_app_name(name)
    message = str(info.value)
    # The message says what a valid name looks like.
    assert "lower-case" in message
    assert "63" in message
    assert "hello" in message


def test_app_name_rejects_non_strings() -> None:
    with pytest.raises(ValidationError):
        validate_app_name(None)  # type: ignore[arg-type]


# --- exec commands ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("git-receive-pack '/app.git'", GitCommand("git-receive-pack", "app")),
        ("git-receive-pack 'app.git'", GitCommand("git-receive-pack", "app")),
        ("git-upload-pack '/app'", GitCommand("git-upload-pack", "app")),
        ("git-receive-pack app", GitCommand("git-receive-pack", "app")),
        ("git-upload-pack '/my-api.git'", GitCommand("git-upload-pack", "my-api")),
        ('git-receive-pack "/app.git"', GitCommand("git-receive-pack", "app")),
    ],
)
def test_parse_command_accepts_git_services(command: str, expected: GitCommand) -> None:
    parsed = parse_command(command)
    assert parsed == expected
    assert parsed.is_push == (expected.service == "git-receive-pack")


@pytest.mark.parametrize(
    "command",
    [
        None,
        "",
        "ls",
        "git-receive-pack",
        "git-upload-pack",
        "git-receive-pack '../x'",
        "git-receive-pack '/../x'",
        "git-receive-pack '-x'",
        "git-receive-pack '--upload-pack=touch /tmp/pwned'",
        "git-receive-pack 'a' 'b'",
        "git-receive-pack '/a/b.git'",
        "git-receive-pack '//app'",
        "git-receive-pack 'app.git.git'",
        "git-receive-pack '.git'",
        "git-receive-pack '/'",
        "git-receive-pack 'A'",
        "git-receive-pack 'a;rm -rf /'",
        "git-receive-pack a;rm -rf /",
        "git-receive-pack 'a$(id)'",
        "git-receive-pack 'a`id`'",
        "git-shell -c x",
        "git-upload-archive 'app'",
        "/usr/bin/git-receive-pack 'app'",
        "git receive-pack 'app'",
        "git-receive-pack 'app",
        'git-receive-pack "app',
        "git-receive-pack 'app\"",
        "git-receive-pack 'app\n'",
    ],
)
def test_parse_command_rejects_everything_else(command: str | None) -> None:
    with pytest.raises(ValidationError) as info:
        parse_command(command)
    assert str(info.value)


@pytest.mark.parametrize("value", ["version=2", "version=1", "version=0"])
def test_git_protocol_accepts_plain_versions(value: str) -> None:
    assert git_protocol(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "version=2:foo",
        "x",
        "",
        None,
        "version=22",
        "version=3",
        "version=2\n",
        " version=2",
        "version=2 ",
        "VERSION=2",
        "version=2;rm",
    ],
)
def test_git_protocol_ignores_anything_else(value: str | None) -> None:
    assert git_protocol(value) is None


# --- route table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello.Localhost:8080", "hello.localhost"),
        ("hello.localhost", "hello.localhost"),
        ("hello.localhost.", "hello.localhost"),
        ("hello.localhost.:8080", "hello.localhost"),
        ("HELLO.LOCALHOST", "hello.localhost"),
        ("[::1]:80", "[::1]"),
        ("[::1]", "[::1]"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("  web.localhost  ", "web.localhost"),
        ("\tweb.localhost:1\t", "web.localhost"),
        (None, ""),
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalize_host(raw: str | None, expected: str) -> None:
    assert normalize_host(raw) == expected


def _up(app: str, port: int = 1000, deployment_id: int = 1) -> Upstream:
    return Upstream(app=app, host="127.0.0.1", port=port, deployment_id=deployment_id)


def test_route_table_set_lookup_remove() -> None:
    table = RouteTable("localhost")
    assert len(table) == 0
    assert table.lookup("web.localhost") is None
    table.set(_up("web"))
    assert table.lookup("web.localhost") == _up("web")
    assert table.lookup("WEB.Localhost:8080") == _up("web")
    assert table.lookup("web.localhost.") == _up("web")
    assert table.lookup("localhost") is None
    assert table.lookup("x.web.localhost") is None
    assert table.lookup("web") is None
    assert table.lookup(None) is None
    table.set(_up("web", port=2000, deployment_id=2))  # a new release replaces the old one
    assert table.lookup("web.localhost") == _up("web", port=2000, deployment_id=2)
    assert len(table) == 1
    table.set(_up("api", port=3000))
    assert len(table) == 2
    table.remove("web")
    assert table.lookup("web.localhost") is None
    assert table.lookup("api.localhost") == _up("api", port=3000)
    table.remove("web")  # removing twice is harmless
    table.remove("never-there")
    assert len(table) == 1


def test_route_table_uses_base_domain() -> None:
    table = RouteTable("Apps.Example.COM.")
    assert table.base_domain == "apps.example.com"
    table.set(_up("web"))
    assert table.hostname("web") == "web.apps.example.com"
    assert table.lookup("web.apps.example.com:443") == _up("web")
    assert table.lookup("web.localhost") is None


def test_route_table_replace() -> None:
    table = RouteTable("localhost")
    table.set(_up("old"))
    table.replace([_up("a", 1), _up("b", 2)])
    assert table.lookup("old.localhost") is None
    assert table.lookup("a.localhost") == _up("a", 1)
    assert table.lookup("b.localhost") == _up("b", 2)
    assert dict(table.snapshot()) == {"a.localhost": _up("a", 1), "b.localhost": _up("b", 2)}
    table.replace([])
    assert len(table) == 0


def test_route_table_snapshot_is_replaced_not_mutated() -> None:
    table = RouteTable("localhost")
    table.set(_up("web"))
    before = table.snapshot()
    table.set(_up("api"))
    table.set(_up("web", port=9999, deployment_id=7))
    assert dict(before) == {"web.localhost": _up("web")}
    mid = table.snapshot()
    table.remove("web")
    assert "web.localhost" in mid
    assert dict(mid)["web.localhost"] == _up("web", port=9999, deployment_id=7)
    table.replace([])
    assert len(mid) == 2
    assert table.snapshot() is not mid


def test_route_table_mapping_cannot_be_mutated() -> None:
    table = RouteTable("localhost")
    table.set(_up("web"))
    snap: Any = table.snapshot()
    with pytest.raises(TypeError):
        snap["evil.localhost"] = _up("evil")
    with pytest.raises(TypeError):
        del snap["web.localhost"]
    assert not hasattr(snap, "update")
    assert table.lookup("evil.localhost") is None
    assert table.lookup("web.localhost") == _up("web")
    upstream: Any = table.lookup("web.localhost")
    with pytest.raises(dataclasses.FrozenInstanceError):
        upstream.port = 1


def test_route_table_snapshot_is_a_read_only_mapping() -> None:
    table = RouteTable("localhost")
    assert isinstance(table.snapshot(), Mapping)
    assert not isinstance(table.snapshot(), dict)


def test_route_table_replace_does_not_alias_callers_list() -> None:
    table = RouteTable("localhost")
    upstreams = [_up("a")]
    table.replace(upstreams)
    upstreams.append(_up("b"))
    assert table.lookup("b.localhost") is None


# --- settings ---------------------------------------------------------------------------------

ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    "ssh_host": "0.0.0.0",
    "ssh_port": 2222,
    "proxy_host": "0.0.0.0",
    "proxy_port": 8080,
    "base_domain": "localhost",
    "deploy_branch": "main",
    "max_concurrent_deploys": 2,
    "runtime": "docker",
    "auto_create_apps": True,
}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with no RIVETR_* variables in the real environment."""
    monkeypatch.chdir(tmp_path)
    for setting in SETTINGS:
        monkeypatch.delenv("RIVETR_" + setting.name.upper(), raising=False)
    return tmp_path


def _toml(directory: Path, text: str) -> Path:
    path = directory / "rivetr.toml"
    path.write_text(text)
    return path


def test_defaults_match_architecture_table(in_tmp: Path) -> None:
    settings = load_settings(env={})
    for name, value in ARCHITECTURE_DEFAULTS.items():
        assert getattr(settings, name) == value, name
    assert settings.data_dir == in_tmp.resolve() / "data"
    assert settings.db_path == settings.data_dir / "rivetr.db"


def test_defaults_read_os_environ_when_env_is_not_given(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIVETR_SSH_PORT", "2345")
    assert load_settings().ssh_port == 2345


def test_toml_top_level_keys(in_tmp: Path) -> None:
    config = _toml(
        in_tmp,
        'ssh_port = 2200\nproxy_host = "127.0.0.1"\nbase_domain = "Apps.Example.com"\n'
        "auto_create_apps = false\nmax_concurrent_deploys = 4\nhealth_interval = 1\n"
        'deploy_branch = "production"\nhealth_path = "/up"\ndata_dir = "state"\n',
    )
    settings = load_settings(config, env={})
    assert settings.ssh_port == 2200
    assert settings.proxy_host == "127.0.0.1"
    assert settings.base_domain == "apps.example.com"
    assert settings.auto_create_apps is False
    assert settings.max_concurrent_deploys == 4
    assert settings.health_interval == 1.0
    assert isinstance(settings.health_interval, float)
    assert settings.deploy_branch == "production"
    assert settings.health_path == "/up"
    assert settings.data_dir.is_absolute()
    assert settings.data_dir.name == "state"
    assert settings.proxy_port == 8080  # untouched settings keep their defaults


def test_toml_server_table(in_tmp: Path) -> None:
    config = _toml(in_tmp, '[server]\nproxy_port = 9090\nssh_host = "127.0.0.1"\n')
    settings = load_settings(config, env={})
    assert settings.proxy_port == 9090
    assert settings.ssh_host == "127.0.0.1"
    assert settings.ssh_port == 2222


def test_toml_top_level_keys_next_to_server_table_are_not_silently_ignored(
    in_tmp: Path,
) -> None:
    config = _toml(in_tmp, "ssh_port = 2200\n\n[server]\nproxy_port = 9090\n")
    try:
        settings = load_settings(config, env={})
    except ConfigError:
        return  # refusing the mix is fine too
    assert settings.proxy_port == 9090
    assert settings.ssh_port == 2200


def test_toml_server_that_is_not_a_table_is_a_config_error(in_tmp: Path) -> None:
    config = _toml(in_tmp, "server = 5\n")
    with pytest.raises(ConfigError, match="server"):
        load_settings(config, env={})


def test_env_overrides_toml(in_tmp: Path) -> None:
    config = _toml(in_tmp, "ssh_port = 2200\nproxy_port = 9090\nauto_create_apps = true\n")
    env = {"RIVETR_SSH_PORT": "2300", "RIVETR_AUTO_CREATE_APPS": "no", "UNRELATED": "x"}
    settings = load_settings(config, env=env)
    assert settings.ssh_port == 2300
    assert settings.proxy_port == 9090
    assert settings.auto_create_apps is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_env_booleans(in_tmp: Path, raw: str, expected: bool) -> None:
    assert load_settings(env={"RIVETR_AUTO_CREATE_APPS": raw}).auto_create_apps is expected


def test_overrides_beat_env_and_toml(in_tmp: Path) -> None:
    config = _toml(in_tmp, "ssh_port = 2200\n")
    settings = load_settings(
        config,
        env={"RIVETR_SSH_PORT": "2300", "RIVETR_DATA_DIR": "/from/env"},
        overrides={"ssh_port": 2400, "data_dir": str(in_tmp / "cli"), "proxy_port": None},
    )
    assert settings.ssh_port == 2400
    assert settings.data_dir == (in_tmp / "cli").resolve()
    assert settings.proxy_port == 8080  # None means "not given on the command line"


def test_data_dir_becomes_absolute(in_tmp: Path) -> None:
    settings = load_settings(env={"RIVETR_DATA_DIR": "some/where"})
    assert settings.data_dir.is_absolute()
    assert settings.data_dir == (in_tmp / "some" / "where").resolve()
    assert load_settings(env={"RIVETR_DATA_DIR": "~/x"}).data_dir == Path("~/x").expanduser()


ENV_BAD = [
    ("RIVETR_SSH_PORT", "abc", "ssh_port"),
    ("RIVETR_SSH_PORT", "70000", "ssh_port"),
    ("RIVETR_SSH_PORT", "-1", "ssh_port"),
    ("RIVETR_PROXY_PORT", "", "proxy_port"),
    ("RIVETR_MAX_CONCURRENT_DEPLOYS", "0", "max_concurrent_deploys"),
    ("RIVETR_AUTO_CREATE_APPS", "maybe", "auto_create_apps"),
    ("RIVETR_BASE_DOMAIN", "-bad", "base_domain"),
    ("RIVETR_BASE_DOMAIN", "", "base_domain"),
    ("RIVETR_BASE_DOMAIN", "a..b", "base_domain"),
    ("RIVETR_BASE_DOMAIN", "under_score.com", "base_domain"),
    ("RIVETR_BASE_DOMAIN", "b\u00fccher.example", "base_domain"),
    ("RIVETR_DEPLOY_BRANCH", "a..b", "deploy_branch"),
    ("RIVETR_DEPLOY_BRANCH", "-main", "deploy_branch"),
    ("RIVETR_HEALTH_PATH", "health", "health_path"),
    ("RIVETR_HEALTH_INTERVAL", "0", "health_interval"),
    ("RIVETR_HEALTH_INTERVAL", "nan", "health_interval"),
    ("RIVETR_HEALTH_TIMEOUT", "nan", "health_timeout"),
    ("RIVETR_HEALTH_RETRIES", "1.5", "health_retries"),
    ("RIVETR_RUNTIME", "rkt", "runtime"),
    ("RIVETR_SSH_HOST", "not a host", "ssh_host"),
    ("RIVETR_LOG_LEVEL", "loud", "log_level"),
    ("RIVETR_DATA_DIR", "", "data_dir"),
    ("RIVETR_HTTPS_PORT", "70000", "https_port"),
    ("RIVETR_HTTPS_REDIRECT", "maybe", "https_redirect"),
    ("RIVETR_ACME_DIRECTORY", "ftp://acme.test/dir", "acme_directory"),
    ("RIVETR_ACME_EMAIL", "not an address", "acme_email"),
    ("RIVETR_ACME_CA_BUNDLE", "/nonexistent/ca.pem", "acme_ca_bundle"),
]


@pytest.mark.parametrize(("var", "value", "setting"), ENV_BAD)
def test_bad_env_values_are_refused_naming_the_setting(
    in_tmp: Path, var: str, value: str, setting: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={var: value})
    message = str(info.value)
    assert setting in message
    assert var in message


TOML_BAD = [
    ("ssh_port = 70000", "ssh_port"),
    ('ssh_port = "abc"', "ssh_port"),
    ("ssh_port = 22.5", "ssh_port"),
    ("ssh_port = true", "ssh_port"),
    ("max_concurrent_deploys = 0", "max_concurrent_deploys"),
    ('auto_create_apps = "maybe"', "auto_create_apps"),
    ("auto_create_apps = 1", "auto_create_apps"),
    ('base_domain = "-bad"', "base_domain"),
    ('deploy_branch = "a..b"', "deploy_branch"),
    ('health_path = "health"', "health_path"),
    ("proxy_host = 5", "proxy_host"),
    ("data_dir = 5", "data_dir"),
    ("health_timeout = -1.0", "health_timeout"),
    ("no_such_setting = 1", "no_such_setting"),
    ("[server]\nssh_port = 70000", "ssh_port"),
    ("[server]\nbogus = 1", "bogus"),
]


@pytest.mark.parametrize(("text", "setting"), TOML_BAD)
def test_bad_toml_values_are_refused_naming_the_setting(
    in_tmp: Path, text: str, setting: str
) -> None:
    config = _toml(in_tmp, text + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config, env={})
    assert setting in str(info.value)


def test_bad_override_is_refused(in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match="proxy_port"):
        load_settings(env={}, overrides={"proxy_port": 99999})


def test_invalid_toml_is_a_config_error(in_tmp: Path) -> None:
    config = _toml(in_tmp, "ssh_port = = 3\n[[[\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config, env={})
    assert str(config) in str(info.value)
    assert "TOML" in str(info.value)


def test_missing_config_file_is_a_config_error(in_tmp: Path) -> None:
    missing = in_tmp / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing, env={})
    assert str(missing) in str(info.value)


def test_every_setting_has_a_settings_field_with_the_same_default() -> None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names)), "duplicate setting names"
    assert set(names) == set(fields), "SETTINGS and the Settings dataclass disagree"
    for setting in SETTINGS:
        assert fields[setting.name].default == setting.default, setting.name
        assert isinstance(setting.default, setting.type), setting.name
        assert setting.help, setting.name
    for name in ARCHITECTURE_DEFAULTS:
        assert name in fields


def test_settings_help_lists_every_setting_and_env_var() -> None:
    text = settings_help()
    for setting in SETTINGS:
        assert setting.name in text, setting.name
        assert "RIVETR_" + setting.name.upper() in text, setting.name


def test_readme_lists_every_setting() -> None:
    text = README.read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in text]
    assert not missing, f"README.md does not mention settings: {missing}"


# --- public keys ------------------------------------------------------------------------------


def _keygen(directory: Path, name: str = "id_ed25519") -> Path:
    private = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@example", "-f", str(private)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return private


def _ssh_keygen_fingerprint(pub: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    field = out.split()[1]
    assert field.startswith("SHA256:")
    return field


def test_parse_public_key_matches_ssh_keygen(tmp_path: Path) -> None:
    private = _keygen(tmp_path)
    pub = private.with_name(private.name + ".pub")
    text = pub.read_text()
    key = parse_public_key(text)
    assert key.fingerprint == _ssh_keygen_fingerprint(pub)
    assert key.openssh == " ".join(text.split()[:2])  # comment dropped
    # Surrounding blank lines and comment lines do not matter.
    assert parse_public_key(f"\n# my laptop\n{text}\n\n") == key


def test_parse_public_key_rejects_private_key(tmp_path: Path) -> None:
    private = _keygen(tmp_path)
    with pytest.raises(ValidationError) as info:
        parse_public_key(private.read_text())
    assert "private" in str(info.value)


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n"])
def test_parse_public_key_rejects_empty(text: str) -> None:
    with pytest.raises(ValidationError, match="one OpenSSH public key"):
        parse_public_key(text)


def test_parse_public_key_rejects_two_keys(tmp_path: Path) -> None:
    one = _keygen(tmp_path, "one").with_name("one.pub").read_text()
    two = _keygen(tmp_path, "two").with_name("two.pub").read_text()
    with pytest.raises(ValidationError, match="exactly one"):
        parse_public_key(one + two)


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "ssh-ed25519",
        "ssh-ed25519 AAAA",
        "ssh-ed25519 !!!not-base64!!!",
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA==",
        "-----BEGIN PUBLIC KEY-----",
    ],
)
def test_parse_public_key_rejects_garbage(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_public_key(text)
    assert ".pub" in str(info.value)


def test_ack_promptly_forwards_reads_and_can_be_undone() -> None:
    """The handshake speed-up wraps data_received; it must forward every byte unchanged."""
    import socket

    from rivetr_git.receiver.server import _ack_promptly

    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    received: list[tuple[bytes, int | None]] = []

    class FakeConnection:  # stands in for asyncssh's SSHServerConnection
        def get_extra_info(self, name: str) -> object:
            return peer if name == "socket" else None

        def data_received(self, data: bytes, datatype: int | None = None) -> None:
            received.append((data, datatype))

    conn = FakeConnection()
    original = conn.data_received
    restore = _ack_promptly(conn)  # type: ignore[arg-type]
    assert conn.data_received != original
    conn.data_received(b"abc")
    conn.data_received(b"def", 1)
    assert received == [(b"abc", None), (b"def", 1)]
    restore()
    assert conn.data_received == original
    for s in (client, peer, server):
        s.close()
