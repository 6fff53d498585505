"""The SSH edge: who may connect, which commands run, and what names are accepted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, AppRepo, Key, Server, make_key, ssh_command


def ssh(
    server: Server, key_args: str, command: str | None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    argv = [*key_args.split(), "-p", str(server.ssh_port), "git@127.0.0.1"]
    if command is not None:
        argv.append(command)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_unknown_key_is_refused(server: Server, keys: dict[str, Key], workdir: Path) -> None:
    repo = AppRepo(workdir / "app", keys["mallory"])
    result = repo.push(server.remote("intruder"))
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    assert "intruder" not in server.cli("apps", "list").stdout


@pytest.mark.parametrize("name", ["../x", "-x", "A", "a'b", '"a"', "", "a/b", "x.y", "a b"])
def test_bad_app_names_are_rejected(server: Server, keys: dict[str, Key], name: str) -> None:
    quoted = "'" + name.replace("'", "'\\''") + "'"
    result = ssh(server, ssh_command(keys["alice"].private), f"git-receive-pack {quoted}")
    assert result.returncode != 0
    assert "invalid app name" in result.stderr or "unknown command" in result.stderr, result.stderr
    repos = server.data_dir / "repos"
    assert not repos.exists() or all(p.name[0].isalpha() for p in repos.iterdir())
    assert not (server.data_dir / "x.git").exists()


@pytest.mark.parametrize(
    "command", [None, "ls", "sh -c id", "git-upload-archive 'x'", "scp -t /tmp", "git-receive-pack"]
)
def test_non_git_commands_and_shells_are_refused(
    server: Server, keys: dict[str, Key], command: str | None
) -> None:
    result = ssh(server, ssh_command(keys["alice"].private) + " -T", command)
    assert result.returncode != 0
    assert "unknown command" in result.stderr or "no shell" in result.stderr, result.stderr
    assert "`help` lists them" in result.stderr


@pytest.mark.parametrize(
    ("command", "advice"),
    [
        ("rollback", "usage: rollback [-h] APP [RELEASE]"),
        ("releases a b", "unrecognized arguments: b"),
        ("rollback a 2 3", "unrecognized arguments: 3"),
        ("rollback a x", "'x' is not a release number"),
        ("releases ../x", "invalid app name"),
    ],
)
def test_bad_admin_commands_answer_with_usage(
    server: Server, keys: dict[str, Key], command: str, advice: str
) -> None:
    result = ssh(server, ssh_command(keys["alice"].private) + " -T", command)
    assert result.returncode != 0
    assert advice in result.stderr, result.stderr


def test_subsystems_and_forwarding_are_refused(server: Server, keys: dict[str, Key]) -> None:
    sftp = ssh(server, ssh_command(keys["alice"].private) + " -s", "sftp")
    assert sftp.returncode != 0
    forward = ssh(
        server,
        ssh_command(keys["alice"].private)
        + " -o ExitOnForwardFailure=yes -L 127.0.0.1:0:127.0.0.1:22 -N",
        None,
        timeout=30,
    )
    assert forward.returncode != 0


def test_identity_is_the_key_that_signed_not_the_one_probed(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """Bob offers alice's public key first (probe only), then signs with his own.

    The session must be bob's: a developer may not create apps, so the push is refused.
    If the probe decided identity, the session would be alice's (admin) and succeed.
    """
    pub_only = workdir / "alice-public-only"
    pub_only.write_text(keys["alice"].public.read_text())
    repo = AppRepo(workdir / "app", keys["bob"])
    result = subprocess.run(
        ["git", "push", server.remote("bobs-new-app"), "main"],
        cwd=repo.path,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            **GIT_ENV,
            "GIT_SSH_COMMAND": ssh_command(pub_only, keys["bob"].private) + " -v",
        },
    )
    # The probe really happened: the server said it would accept alice's key...
    assert f"Server accepts key: {pub_only}" in result.stderr
    # ...and bob's key signed.
    assert "Authenticated to 127.0.0.1" in result.stderr
    assert result.returncode != 0
    assert "app 'bobs-new-app' does not exist" in result.stderr, result.stderr
    assert "bobs-new-app" not in server.cli("apps", "list").stdout


def test_developer_pushes_only_to_granted_apps(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    admin_repo = AppRepo(workdir / "admin", keys["alice"])
    assert admin_repo.push(server.remote("team-app")).returncode == 0
    assert admin_repo.push(server.remote("other-app")).returncode == 0

    bob_repo = AppRepo(workdir / "bob", keys["bob"])
    refused = bob_repo.push(server.remote("team-app"), "+main")
    assert refused.returncode != 0
    assert "app 'team-app' does not exist" in refused.stderr
    # Someone else's app answers exactly like a missing one.
    missing = bob_repo.push(server.remote("no-such-app"))
    assert missing.stderr.replace("no-such-app", "X") == refused.stderr.replace("team-app", "X")

    server.cli("access", "grant", "bob", "team-app")
    bob_repo.write("www/index.html", "bob was here\n")
    bob_repo.commit("bob's change")
    granted = bob_repo.push(server.remote("team-app"), "+main")
    assert granted.returncode == 0, granted.stderr
    assert server.get("team-app") == (200, "bob was here\n")
    assert bob_repo.push(server.remote("other-app"), "+main").returncode != 0


def test_removed_key_stops_working(server: Server, workdir: Path) -> None:
    carol = make_key(workdir / "keys", "carol")
    server.cli("keys", "add", "carol", str(carol.public), "--admin")
    repo = AppRepo(workdir / "app", carol)
    assert repo.push(server.remote("carols")).returncode == 0
    server.cli("keys", "remove", "carol")
    repo.commit("after removal")
    result = repo.push(server.remote("carols"))
    assert result.returncode != 0
    assert "Permission denied" in result.stderr


def test_password_and_keyboard_interactive_auth_are_not_offered(server: Server) -> None:
    result = ssh(
        server,
        "ssh -o PubkeyAuthentication=no -o BatchMode=yes "
        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "-o LogLevel=ERROR -o PreferredAuthentications=password,keyboard-interactive",
        "git-upload-pack 'x'",
    )
    assert result.returncode != 0
    assert "Permission denied (publickey)" in result.stderr
