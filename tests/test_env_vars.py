"""Env vars below the verbs: AES-GCM values, the master key file, parsing, the Store tables
and key rotation, on real files and a real SQLite database."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rivetr_git.errors import ConfigError, DecryptionFailed, NotFound, RivetrError, ValidationError
from rivetr_git.models import App
from rivetr_git.receiver.redact import hide_command_arguments, shown_command
from rivetr_git.runtime.base import ContainerSpec
from rivetr_git.secrets import crypto
from rivetr_git.secrets.crypto import Cipher, open_master_key, read_key
from rivetr_git.secrets.env_vars import EnvVars, parse_assignments, validate_names
from rivetr_git.secrets.master_key import local_env_vars, lock_master_key, rotate
from rivetr_git.store.database import Store

EXOTIC = {
    "MULTILINE": "line one\nline two\n\nlast\n",
    "QUOTES": 'it\'s "quoted" `and` $(not run) \\ back',
    "EQUALS": "a=b==c=",
    "UTF8": "héllo wörld ✓ 日本 🚀",
    "SPACES": "  leading and trailing  ",
    "EMPTY": "",
}
SHA = "a" * 40


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[Store]:
    opened = await Store.open(data_dir / "rivetr.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def env(store: Store, data_dir: Path) -> EnvVars:
    return EnvVars(store, open_master_key(data_dir, await store.any_env_value()))


# --- the cipher -------------------------------------------------------------------------------


def test_values_round_trip_exactly_and_each_gets_its_own_nonce() -> None:
    cipher = Cipher.generate()
    for name, value in EXOTIC.items():
        blob = cipher.encrypt("web", name, value)
        assert blob[0] == crypto.FORMAT_V1
        assert value.encode() not in blob or value == ""
        assert cipher.decrypt("web", name, blob) == value
    one, two = cipher.encrypt("web", "A", "same"), cipher.encrypt("web", "A", "same")
    assert one[1:13] != two[1:13] and one != two


def test_a_value_moved_to_another_app_or_name_or_altered_fails_without_showing_it() -> None:
    cipher = Cipher.generate()
    blob = cipher.encrypt("web", "TOKEN", "s3cret-value")
    altered = blob[:-1] + bytes([blob[-1] ^ 1])
    for app, name, data in (
        ("api", "TOKEN", blob),
        ("web", "OTHER", blob),
        ("web", "TOKEN", altered),
        ("web", "TOKEN", b"\x02" + blob[1:]),
        ("web", "TOKEN", blob[:5]),
    ):
        with pytest.raises(DecryptionFailed) as info:
            cipher.decrypt(app, name, data)
        assert f"env var {name} of app {app}" in str(info.value)
        assert "s3cret" not in str(info.value)
    with pytest.raises(DecryptionFailed):
        Cipher.generate().decrypt("web", "TOKEN", blob)


def test_associated_data_is_unambiguous() -> None:
    assert crypto.associated_data("ab", "C") != crypto.associated_data("a", "bC")
    cipher = Cipher.generate()
    with pytest.raises(DecryptionFailed):
        cipher.decrypt("a", "bC", cipher.encrypt("ab", "C", "x"))


def test_neither_the_key_nor_decrypted_values_show_in_a_repr() -> None:
    cipher = Cipher.generate()
    assert cipher.key.hex() not in repr(cipher) and "hidden" in repr(cipher)
    spec = ContainerSpec(name="c", image="i", port=5000, env={"TOKEN": "s3cret"})
    assert "s3cret" not in repr(spec) and "TOKEN" not in repr(spec)


# --- the key file -----------------------------------------------------------------------------


def test_first_start_creates_a_0600_key_and_later_starts_read_it(data_dir: Path) -> None:
    os.umask(0o022)
    first = open_master_key(data_dir, None)
    path = data_dir / "master.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == first.key and len(first.key) == 32
    assert open_master_key(data_dir, None).key == first.key


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.chmod(0o644), "open to other users (mode 0644); run `chmod 600"),
        (lambda p: p.write_bytes(b"short"), "holds 5 bytes, not 32"),
        (lambda p: p.write_bytes(os.urandom(33)), "holds 33 bytes, not 32"),
        (lambda p: (p.unlink(), p.mkdir()), "is not a regular file"),
        (
            lambda p: (p.rename(p.with_name("elsewhere")), p.symlink_to("elsewhere")),
            "cannot read master key",
        ),
    ],
)
def test_a_bad_key_file_stops_start_up_saying_what_to_do(
    data_dir: Path, damage: object, message: str
) -> None:
    open_master_key(data_dir, None)
    damage(data_dir / "master.key")  # type: ignore[operator]
    with pytest.raises(ConfigError, match=r"master key .*master\.key") as info:
        open_master_key(data_dir, None)
    assert message in str(info.value)


def test_a_missing_or_wrong_key_is_refused_once_values_exist(data_dir: Path) -> None:
    cipher = open_master_key(data_dir, None)
    sample = ("web", "A", cipher.encrypt("web", "A", "v"))
    (data_dir / "master.key").unlink()
    with pytest.raises(ConfigError, match="missing but the database holds encrypted env vars"):
        open_master_key(data_dir, sample)
    assert not (data_dir / "master.key").exists()  # never silently replaced
    crypto.write_key(data_dir / "master.key", Cipher.generate())
    with pytest.raises(ConfigError, match="does not decrypt the stored env vars"):
        open_master_key(data_dir, sample)


def test_an_interrupted_rotation_is_settled_by_the_stored_values(data_dir: Path) -> None:
    old = open_master_key(data_dir, None)
    new = Cipher.generate()
    pending = data_dir / "master.key.new"
    # Cut short after the database commit: the values match the new key.
    crypto.write_key(pending, new)
    assert open_master_key(data_dir, ("w", "A", new.encrypt("w", "A", "v"))).key == new.key
    assert read_key(data_dir / "master.key").key == new.key and not pending.exists()
    # Cut short before the commit: the values still match the key file.
    crypto.write_key(pending, old)
    assert open_master_key(data_dir, ("w", "A", new.encrypt("w", "A", "v"))).key == new.key
    assert not pending.exists()
    # Cut short while writing the new key.
    pending.write_bytes(b"\x01\x02")
    pending.chmod(0o600)
    assert open_master_key(data_dir, None).key == new.key and not pending.exists()


# --- parsing ----------------------------------------------------------------------------------


def test_parse_assignments_keeps_values_exactly() -> None:
    args = [f"{n}={v}" for n, v in EXOTIC.items()] + ["_x1=y"]
    assert parse_assignments(args) == {**EXOTIC, "_x1": "y"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give at least one NAME=VALUE (e.g. DATABASE_URL="),
        (["A=1", "justavalue"], "argument 2 is not NAME=VALUE (e.g."),
        (["=v"], "argument 1 has no name before '='"),
        (["1A=v"], "'1A' is not a valid env var name"),
        (["A-B=v"], "'A-B' is not a valid env var name"),
        (["ÄB=v"], "'ÄB' is not a valid env var name"),
        (["PORT=80"], "PORT is set by the platform"),
        (["A=1", "A=2"], "A is given twice"),
        (["A=x\0y"], "the value of A holds a NUL character"),
        (["A=" + "x" * 70000], "the value of A is longer than 65536 bytes"),
    ],
)
def test_parse_assignments_rejects_with_advice_never_echoing_values(
    args: list[str], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse_assignments(args)
    assert message in str(info.value)
    assert "justavalue" not in str(info.value) and "xxxx" not in str(info.value)


def test_validate_names() -> None:
    assert validate_names(["B", "A", "B"]) == ["B", "A"]
    for bad, message in (
        ([], "at least one env var name"),
        (["PORT"], "set by the platform"),
        (["a b"], "not a valid env var name"),
    ):
        with pytest.raises(ValidationError, match=message):
            validate_names(bad)


# --- the API on a real database ---------------------------------------------------------------


async def _app(store: Store, name: str = "web") -> App:
    return await store.create_app(name)


async def test_set_get_names_reveal_unset(store: Store, env: EnvVars) -> None:
    await _app(store)
    await env.set("web", EXOTIC)
    await env.set("web", {"EQUALS": "replaced"})
    assert await env.names("web") == sorted(EXOTIC)
    assert await env.get("web", "MULTILINE") == EXOTIC["MULTILINE"]
    assert await env.reveal("web") == {**EXOTIC, "EQUALS": "replaced"}
    with pytest.raises(NotFound, match="web has no env var NOPE, ALSO; `config web`"):
        await env.unset("web", ["UTF8", "NOPE", "ALSO"])
    assert "UTF8" in await env.names("web")  # all or nothing
    await env.unset("web", ["UTF8", "EMPTY"])
    assert "UTF8" not in await env.names("web") and "EMPTY" not in await env.names("web")
    with pytest.raises(NotFound, match="web has no env var UTF8"):
        await env.get("web", "UTF8")
    with pytest.raises(NotFound, match="no app named 'nope'"):
        await env.set("nope", {"A": "1"})
    with pytest.raises(ValidationError, match="PORT is set by the platform"):
        await env.set("web", {"PORT": "1"})
    with pytest.raises(ValidationError, match="at least one"):
        await env.set("web", {})


async def test_a_deployment_keeps_the_env_it_was_created_with(store: Store, env: EnvVars) -> None:
    app = await _app(store)
    await env.set("web", {"A": "one", "B": "b"})
    first = await store.create_deployment(app, SHA, "one", None)
    await env.set("web", {"A": "two"})
    await env.unset("web", ["B"])
    second = await store.create_deployment(app, SHA, "two", None)
    assert await env.for_deployment(first.id) == {"A": "one", "B": "b"}
    assert await env.for_deployment(second.id) == {"A": "two"}
    # A rollback re-runs a release with that release's env, not the app's current one.
    await store.set_status(first.id, first.status, image="img:1")
    back = await store.create_deployment(
        app, SHA, "one", None, rollback_of=await store.get_deployment(first.id)
    )
    assert await env.for_deployment(back.id) == {"A": "one", "B": "b"}
    await env.snapshot("web", back.id)  # e.g. config:set restarting the live image
    assert await env.for_deployment(back.id) == {"A": "two"}
    other = await _app(store, "api")
    with pytest.raises(NotFound):
        await env.snapshot(other.name, back.id)


async def test_a_ciphertext_copied_to_another_app_or_name_fails_to_decrypt(
    store: Store, env: EnvVars, data_dir: Path
) -> None:
    web, api = await _app(store, "web"), await _app(store, "api")
    await env.set("web", {"TOKEN": "s3cret"})
    raw = sqlite3.connect(data_dir / "rivetr.db", isolation_level=None)
    try:
        raw.execute(
            "INSERT INTO env_vars (app_id, name, value) SELECT ?, name, value "
            "FROM env_vars WHERE app_id = ?",
            (api.id, web.id),
        )
        raw.execute(
            "INSERT INTO env_vars (app_id, name, value) SELECT app_id, 'OTHER', value "
            "FROM env_vars WHERE app_id = ?",
            (web.id,),
        )
    finally:
        raw.close()
    for app, name in (("api", "TOKEN"), ("web", "OTHER")):
        with pytest.raises(DecryptionFailed, match=f"env var {name} of app {app}"):
            await env.get(app, name)
    deployment = await store.create_deployment(api, SHA, "m", None)
    with pytest.raises(DecryptionFailed, match="env var TOKEN of app api"):
        await env.for_deployment(deployment.id)


async def test_deleting_an_app_deletes_its_env_and_snapshots(
    store: Store, env: EnvVars, data_dir: Path
) -> None:
    app = await _app(store)
    await env.set("web", {"A": "1"})
    await store.create_deployment(app, SHA, "m", None)
    await store.delete_app(app)  # what apps:destroy does; the env goes by ON DELETE CASCADE
    raw = sqlite3.connect(data_dir / "rivetr.db", isolation_level=None)
    try:
        assert raw.execute("SELECT count(*) FROM env_vars").fetchone()[0] == 0
        assert raw.execute("SELECT count(*) FROM deployment_env").fetchone()[0] == 0
    finally:
        raw.close()
    await _app(store)  # the same name again starts with no env
    assert await env.names("web") == []


def _db_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("rivetr.db*"))


async def test_no_plaintext_reaches_the_database_files(
    store: Store, env: EnvVars, data_dir: Path
) -> None:
    app = await _app(store)
    values = {n: f"{v} plain-marker-{n}" for n, v in EXOTIC.items()}
    await env.set("web", values)
    await store.create_deployment(app, SHA, "m", None)
    files = _db_bytes(data_dir)
    assert b"plain-marker-UTF8" not in files and "日本".encode() not in files
    for value in values.values():
        assert value.encode() not in files


async def test_rotation_keeps_every_value_and_the_old_key_no_longer_decrypts(
    store: Store, env: EnvVars, data_dir: Path
) -> None:
    app = await _app(store)
    await env.set("web", EXOTIC)
    deployment = await store.create_deployment(app, SHA, "m", None)
    old = read_key(data_dir / "master.key")
    await store.close()  # rotate() opens its own connection, as the CLI does
    assert await rotate(data_dir, data_dir / "rivetr.db") == 2 * len(EXOTIC)
    new = read_key(data_dir / "master.key")
    assert new.key != old.key and not (data_dir / "master.key.new").exists()
    reopened = await Store.open(data_dir / "rivetr.db")
    try:
        fresh = EnvVars(reopened, new)
        assert await fresh.reveal("web") == EXOTIC
        assert await fresh.for_deployment(deployment.id) == EXOTIC
        with pytest.raises(DecryptionFailed):
            await EnvVars(reopened, old).reveal("web")
        with pytest.raises(DecryptionFailed):
            await EnvVars(reopened, old).for_deployment(deployment.id)
    finally:
        await reopened.close()


async def test_rotation_changes_nothing_when_a_value_does_not_decrypt(
    store: Store, env: EnvVars, data_dir: Path
) -> None:
    await _app(store)
    await env.set("web", {"A": "1", "B": "2"})
    key = read_key(data_dir / "master.key").key
    raw = sqlite3.connect(data_dir / "rivetr.db", isolation_level=None)
    try:
        raw.execute(
            "UPDATE env_vars SET value = (SELECT value FROM env_vars WHERE name = 'A') "
            "WHERE name = 'B'"
        )
        before = raw.execute("SELECT name, value FROM env_vars ORDER BY name").fetchall()
        with pytest.raises(DecryptionFailed, match="env var B of app web"):
            await env.rotate(Cipher.generate())
        assert raw.execute("SELECT name, value FROM env_vars ORDER BY name").fetchall() == before
    finally:
        raw.close()
    assert await env.get("web", "A") == "1"  # still the old key
    assert read_key(data_dir / "master.key").key == key


def test_rotation_refuses_while_the_server_holds_the_key(data_dir: Path) -> None:
    open_master_key(data_dir, None)
    with lock_master_key(data_dir, exclusive=False):  # what a running daemon holds
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "rivetr_git.cli.main",
                "--data-dir",
                str(data_dir),
                "secrets",
                "rotate",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "is using this data dir's master key; stop the server first" in result.stderr
    with (
        lock_master_key(data_dir, exclusive=True),
        pytest.raises(RivetrError, match=r"a master key rotation .* is running"),
    ):
        lock_master_key(data_dir, exclusive=False)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rivetr_git.cli.main",
            "--data-dir",
            str(data_dir),
            "secrets",
            "rotate",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 0 env var values under a new master key" in result.stdout


async def test_a_local_command_holds_off_rotation_and_sees_what_it_wrote(
    store: Store, data_dir: Path
) -> None:
    await _app(store)
    async with local_env_vars(data_dir, data_dir / "rivetr.db") as env:
        await env.set("web", {"A": "1"})
        with pytest.raises(RivetrError, match="is using this data dir's master key"):
            await rotate(data_dir, data_dir / "rivetr.db")
    assert await rotate(data_dir, data_dir / "rivetr.db") == 1
    async with local_env_vars(data_dir, data_dir / "rivetr.db") as env:
        assert await env.reveal("web") == {"A": "1"}


async def test_a_rotation_cut_short_after_its_commit_is_finished_by_the_next_start(
    store: Store, env: EnvVars, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _app(store)
    await env.set("web", {"A": "1"})
    old = read_key(data_dir / "master.key")
    await store.close()

    def crash(*_: object) -> None:
        raise OSError("power cut")  # between the database commit and the key rename

    monkeypatch.setattr("rivetr_git.secrets.master_key.os.replace", crash)
    with pytest.raises(OSError, match="power cut"):
        await rotate(data_dir, data_dir / "rivetr.db")
    monkeypatch.undo()
    assert read_key(data_dir / "master.key").key == old.key  # still the old key file
    assert (data_dir / "master.key.new").exists()
    reopened = await Store.open(data_dir / "rivetr.db")
    try:
        cipher = open_master_key(data_dir, await reopened.any_env_value())  # a start
        assert cipher.key != old.key and not (data_dir / "master.key.new").exists()
        assert read_key(data_dir / "master.key").key == cipher.key
        assert await EnvVars(reopened, cipher).reveal("web") == {"A": "1"}
    finally:
        await reopened.close()


def test_logged_ssh_commands_keep_the_verb_and_app_only() -> None:
    assert shown_command("git-receive-pack '/web.git'") == "git-receive-pack '/web.git'"
    assert shown_command("config web") == "config web"
    assert shown_command("config:set web 'A=s3cret value'") == "config:set web [arguments hidden]"
    assert shown_command("config:set A=s3cret") == "config:set [arguments hidden]"
    assert shown_command("run web printenv") == "run web [arguments hidden]"
    logger = logging.getLogger("test-redact")
    hide_command_arguments(logger)
    hide_command_arguments(logger)
    assert len(logger.filters) == 1
    record = logger.makeRecord(
        "test-redact",
        logging.INFO,
        __file__,
        1,
        "[conn=0, chan=0]   Command: %s",
        ("config:set web A=s3cret",),
        None,
    )
    assert logger.filter(record)
    assert record.getMessage() == "[conn=0, chan=0]   Command: config:set web [arguments hidden]"
