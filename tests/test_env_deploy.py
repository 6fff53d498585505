"""End to end: env vars reach the app's container exactly, encrypted at rest, per release,
through key rotation; a bad key stops the server and a bad value fails the deploy.

Most tests set env vars through the EnvVars API on the server's own database (shared with
the running daemon in WAL mode), as the verbs do; one goes through the config verbs over SSH.
"""

from __future__ import annotations

import asyncio
import shlex
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from rivetr_git.errors import DecryptionFailed
from rivetr_git.secrets.crypto import Cipher, read_key
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.store.database import Store
from tests.helpers import SHELL_DOCKERFILE_HEAD, AppRepo, Key, Server, docker_ids
from tests.test_switch import ssh_command_line

T = TypeVar("T")

NAMES = ("PORT", "MULTILINE", "QUOTES", "EQUALS", "UTF8", "SPACES", "EMPTY", "TOKEN")
EXOTIC = {
    "MULTILINE": "line one\nline two\n\nlast\n",
    "QUOTES": 'it\'s "quoted" `and` $(echo not run) \\ back',
    "EQUALS": "a=b==c=",
    "UTF8": "héllo wörld ✓ 日本 🚀",
    "SPACES": "  leading and trailing  ",
    "EMPTY": "",
    "TOKEN": "tok-plaintext-marker-4f1e",
}
ENV_APP = (
    SHELL_DOCKERFILE_HEAD
    + """\
COPY www /www
RUN chmod +x /www/cgi-bin/env
EXPOSE 5000
CMD ["httpd", "-f", "-p", "5000", "-h", "/www"]
"""
)
# Prints each variable hex-encoded (so newlines and spaces survive), or '-' when unset.
ENV_CGI = """#!/bin/sh
echo 'Content-Type: text/plain'
echo
for n in @NAMES@; do
  if eval "[ -n \\"\\${$n+set}\\" ]"; then
    eval "v=\\"\\${$n}\\""
    printf '%s %s\\n' "$n" "$(printf '%s' "$v" | od -An -v -tx1 | tr -d ' \\n')"
  else
    printf '%s -\\n' "$n"
  fi
done
""".replace("@NAMES@", " ".join(NAMES))


def env_repo(path: Path, key: Key) -> AppRepo:
    repo = AppRepo(path, key, ENV_APP)
    (repo.path / "www" / "cgi-bin").mkdir()
    repo.write("www/cgi-bin/env", ENV_CGI)
    repo.commit("env app")
    return repo


def seen_env(server: Server, app: str) -> dict[str, str | None]:
    """What the app's container has in its env, read through the proxy."""
    status, body = server.get(app, "/cgi-bin/env")
    assert status == 200, body
    seen: dict[str, str | None] = {}
    for line in body.splitlines():
        name, _, hexed = line.partition(" ")
        seen[name] = None if hexed == "-" else bytes.fromhex(hexed).decode()
    return seen


def with_env(server: Server, fn: Callable[[EnvVars, Store], Awaitable[T]]) -> T:
    """Run `fn` with the EnvVars API on the server's own database and master key."""

    async def go() -> T:
        store = await Store.open(server.data_dir / "rivetr.db")
        try:
            return await fn(EnvVars(store, read_key(server.data_dir / "master.key")), store)
        finally:
            await store.close()

    return asyncio.run(go())


def set_env(server: Server, app: str, values: dict[str, str]) -> None:
    async def go(env: EnvVars, _: Store) -> None:
        await env.set(app, values)

    with_env(server, go)


def redeploy(repo: AppRepo, server: Server, app: str, message: str) -> str:
    repo.commit(message)
    pushed = repo.push(server.remote(app))
    assert pushed.returncode == 0, pushed.stderr
    return pushed.stderr


def db_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("rivetr.db*"))


def test_env_values_reach_the_container_exactly_and_never_rest_in_plaintext(
    own_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv = own_server
    repo = env_repo(tmp_path / "app", keys["alice"])
    assert repo.push(srv.remote("envy")).returncode == 0
    assert seen_env(srv, "envy") == {"PORT": "5000", **{n: None for n in EXOTIC}}
    assert (srv.data_dir / "master.key").stat().st_mode & 0o777 == 0o600

    set_env(srv, "envy", EXOTIC)
    output = redeploy(repo, srv, "envy", "with env")
    assert seen_env(srv, "envy") == {"PORT": "5000", **EXOTIC}

    files = db_bytes(srv.data_dir)
    assert files and EXOTIC["TOKEN"].encode() not in files
    assert EXOTIC["UTF8"].encode() not in files and EXOTIC["MULTILINE"].encode() not in files
    logs = output + srv.log() + srv.cli("logs", "2").stdout
    assert EXOTIC["TOKEN"] not in logs and EXOTIC["QUOTES"] not in logs

    # Rotation: refused while the server runs; done while it is stopped; values survive.
    busy = srv.cli("secrets", "rotate", check=False)
    assert busy.returncode != 0
    assert "is using this data dir's master key; stop the server first" in busy.stderr
    old = read_key(srv.data_dir / "master.key")
    srv.stop()
    rotated = srv.cli("secrets", "rotate")
    assert "re-encrypted 14 env var values" in rotated.stdout  # the app's 7 and release #2's

    async def old_key_fails(_: EnvVars, store: Store) -> None:
        with pytest.raises(DecryptionFailed):
            await EnvVars(store, old).reveal("envy")

    with_env(srv, old_key_fails)
    srv.start()
    assert seen_env(srv, "envy") == {"PORT": "5000", **EXOTIC}  # served again, no redeploy
    redeploy(repo, srv, "envy", "after rotation")
    assert seen_env(srv, "envy") == {"PORT": "5000", **EXOTIC}

    # A bad key stops start-up with a message that says what to do; the apps keep serving.
    srv.stop()
    key = srv.data_dir / "master.key"
    key.chmod(0o644)
    with pytest.raises(AssertionError, match=r"master\.key is open to other users"):
        srv.start()
    key.chmod(0o600)
    good = key.read_bytes()
    key.write_bytes(good[:16])
    with pytest.raises(AssertionError, match="holds 16 bytes, not 32"):
        srv.start()
    key.unlink()
    with pytest.raises(AssertionError, match="missing but the database holds encrypted env"):
        srv.start()
    assert not key.exists()  # never replaced by a fresh key that decrypts nothing
    key.write_bytes(Cipher.generate().key)
    key.chmod(0o600)
    with pytest.raises(AssertionError, match="does not decrypt the stored env vars"):
        srv.start()
    key.write_bytes(good)
    srv.start()
    assert seen_env(srv, "envy") == {"PORT": "5000", **EXOTIC}


def test_a_rollback_runs_with_the_env_of_the_release_it_restores(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = env_repo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("envback")).returncode == 0
    set_env(server, "envback", {"TOKEN": "first"})
    redeploy(repo, server, "envback", "v2")
    release_v2 = server.cli("deploys", "list", "envback").stdout.splitlines()[1].split()[0]
    set_env(server, "envback", {"TOKEN": "second", "EQUALS": "x=y"})
    redeploy(repo, server, "envback", "v3")
    release_v3 = server.cli("deploys", "list", "envback").stdout.splitlines()[1].split()[0]
    assert seen_env(server, "envback")["TOKEN"] == "second"

    back = server.cli("rollback", "envback", release_v2.lstrip("#"), check=False)
    assert back.returncode == 0, back.stdout + back.stderr
    seen = seen_env(server, "envback")
    assert seen["TOKEN"] == "first" and seen["EQUALS"] is None
    forward = server.cli("rollback", "envback", release_v3.lstrip("#"), check=False)
    assert forward.returncode == 0, forward.stdout + forward.stderr
    seen = seen_env(server, "envback")
    assert seen["TOKEN"] == "second" and seen["EQUALS"] == "x=y"


def test_a_value_moved_to_another_app_fails_the_deploy_and_is_never_injected(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = env_repo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("envdst")).returncode == 0

    async def make_source(env: EnvVars, store: Store) -> None:
        await store.create_app("envsrc")
        await env.set("envsrc", {"TOKEN": "moved-secret-value"})

    with_env(server, make_source)
    raw = sqlite3.connect(server.data_dir / "rivetr.db", isolation_level=None, timeout=10)
    try:
        raw.execute(
            "INSERT INTO env_vars (app_id, name, value) "
            "SELECT (SELECT id FROM apps WHERE name = 'envdst'), name, value FROM env_vars "
            "WHERE app_id = (SELECT id FROM apps WHERE name = 'envsrc')"
        )
    finally:
        raw.close()

    repo.commit("with a moved value")
    pushed = repo.push(server.remote("envdst"))
    assert pushed.returncode != 0
    assert (
        "Deploy failed at starting: env var TOKEN of app envdst cannot be decrypted"
        in pushed.stderr
    )
    assert "moved-secret-value" not in pushed.stderr + server.log()
    assert seen_env(server, "envdst")["TOKEN"] is None  # the previous release keeps serving
    assert len(docker_ids("ps", server.instance, "label=rivetr.app=envdst")) == 1
    assert server.statuses("envdst")[:2] == ["failed", "running"]


def test_config_verbs_over_ssh_carry_exact_values_to_the_app_and_none_to_the_log(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = env_repo(workdir / "app", keys["alice"])
    assert repo.push(server.remote("envssh")).returncode == 0

    def ssh(command: str) -> tuple[int, str, str]:
        done = ssh_command_line(server, keys["alice"], command)
        return done.returncode, done.stdout, done.stderr

    assignments = " ".join(shlex.quote(f"{n}={v}") for n, v in EXOTIC.items())
    code, out, err = ssh(f"config:set envssh {assignments}")
    assert code == 0, out + err
    assert seen_env(server, "envssh") == {"PORT": "5000", **EXOTIC}
    assert ssh("config envssh")[1].split() == sorted(EXOTIC)
    assert ssh("config:get envssh MULTILINE")[1] == EXOTIC["MULTILINE"] + "\n"
    code, _, err = ssh("config:set envssh PORT=1")
    assert code != 0 and "PORT is set by the platform" in err
    code, _, err = ssh("config:set envssh A=1 tok-typed-without-a-name")
    assert code != 0 and "argument 2 is not NAME=VALUE" in err
    assert "tok-typed-without-a-name" not in err
    assert ssh("config:unset envssh TOKEN")[0] == 0
    assert seen_env(server, "envssh")["TOKEN"] is None
    assert EXOTIC["TOKEN"] not in server.log()
    assert "tok-typed-without-a-name" not in server.log()
    assert "Command: config:set envssh [arguments hidden]" in server.log()
