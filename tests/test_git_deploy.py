"""Apps from a git host, end to end: `apps:create --git`, `git:set token=`, `deploy` over
real SSH into the real daemon, fetching from `git http-backend` on loopback, then a build
and a container that serves what the host holds; `git push` to the app keeps working."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.git_host import GitHttpHost, make_source_repo, ssh_git_host
from tests.helpers import GIT_ENV, Key, Server, ssh_command
from tests.test_admin_verbs import fails, ok, verb

TOKEN = "glpat-e2e-token-value-1234"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[GitHttpHost]:
    make_source_repo(tmp_path / "host", "ghweb")
    with GitHttpHost(tmp_path / "host", TOKEN) as served:
        yield served


def test_create_from_git_host_deploy_then_push(
    server: Server, keys: dict[str, Key], host: GitHttpHost, tmp_path: Path
) -> None:
    alice = keys["alice"]
    url = host.url("ghweb")
    assert "created ghweb from" in ok(server, alice, "apps:create", "ghweb", "--git", url)
    # Private: without a token the host refuses, and the advice says what to set.
    refused = fails(server, alice, "deploy", "ghweb")
    assert "refused no token" in refused and "git:set APP token=" in refused
    # The failed fetch is a failed deployment, with the advice as its error.
    listed = ok(server, alice, "deploys", "ghweb")
    assert "0000000" in listed and "failed" in listed and "refused no token" in listed
    assert f"main (from git host {url})" in ok(server, alice, "apps:info", "ghweb")
    wrong = verb(server, alice, "git:set", "ghweb", "token=wrong-one-999")
    assert wrong.returncode == 0 and "wrong-one-999" not in wrong.stdout
    assert "refused the token set with git:set" in fails(server, alice, "deploy", "ghweb")

    out = ok(server, alice, "git:set", "ghweb", f"token={TOKEN}")
    assert "token set" in out and TOKEN not in out
    deployed = ok(server, alice, "deploy", "ghweb")
    for stage in ("Fetching main from", "Building", "Health check", "Running: http://ghweb."):
        assert f"-----> {stage}" in deployed, deployed
    assert server.get("ghweb") == (200, "ghweb from the git host\n")

    missing = fails(server, alice, "deploy", "ghweb", "nope")
    assert "no branch or tag 'nope'" in missing and "its branches: main" in missing
    assert server.get("ghweb") == (200, "ghweb from the git host\n")  # still serving

    # A clone of the host's repo pushed over SSH to the app deploys as before.
    work = tmp_path / "clone"
    subprocess.run(
        [
            "git",
            "-c",
            f"http.extraHeader=Authorization: Basic {_basic()}",
            "clone",
            "-q",
            url,
            str(work),
        ],
        check=True,
        capture_output=True,
    )
    (work / "www" / "index.html").write_text("pushed after the fetch\n")
    env = {**GIT_ENV, "GIT_SSH_COMMAND": ssh_command(alice.private)}
    subprocess.run(["git", "commit", "-qam", "third"], cwd=work, check=True, env=env)
    pushed = subprocess.run(
        ["git", "push", server.remote("ghweb"), "HEAD:main"],
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert server.get("ghweb") == (200, "pushed after the fetch\n")
    assert TOKEN not in server.log()
    # A developer with access deploys, but may not point the server at another URL.
    ok(server, alice, "access:grant", "bob", "ghweb")
    bob = keys["bob"]
    assert "is for admin keys" in fails(server, bob, "git:set", "ghweb", "url=http://10.0.0.1/x")
    assert "branch main" in ok(server, bob, "git:set", "ghweb", "branch=main")
    ok(server, alice, "apps:destroy", "ghweb", "--confirm", "ghweb")


def test_bad_git_url_creates_nothing(server: Server, keys: dict[str, Key]) -> None:
    alice = keys["alice"]
    err = fails(server, alice, "apps:create", "ghbad", "--git", "https://u:pw@host/r.git")
    assert "no password in the URL" in err and "pw" not in err.replace("password", "")
    assert "does not exist" in fails(server, alice, "apps:info", "ghbad")


def _basic() -> str:
    return base64.b64encode(f"x:{TOKEN}".encode()).decode()


def test_ssh_deploy_key_end_to_end(
    docker_engine: None, tmp_path: Path, keys: dict[str, Key]
) -> None:
    """git:key's public half authorised on an SSH git host (its host key in the known_hosts
    of the user the server runs as), then `deploy` over SSH with the stored private half."""
    home = tmp_path / "home"
    make_source_repo(tmp_path / "sshhost", "ghsshapp")
    authorised: list[str] = []  # read per connection: the key is added once it exists
    with ssh_git_host(tmp_path / "sshhost", authorised, home / ".ssh" / "known_hosts") as port:
        for server in running_server(tmp_path / "data", keys, env={"HOME": str(home)}):
            alice = keys["alice"]
            url = f"ssh://git@127.0.0.1:{port}/ghsshapp.git"
            ok(server, alice, "apps:create", "ghsshapp", "--git", url)
            assert "refused no deploy key" in fails(server, alice, "deploy", "ghsshapp")
            public = ok(server, alice, "git:key", "ghsshapp").splitlines()[0]
            assert public.startswith("ssh-ed25519 ") and "PRIVATE" not in public
            assert "deploy key (git:key)" in fails(server, alice, "deploy", "ghsshapp")
            authorised.append(public)
            out = ok(server, alice, "deploy", "ghsshapp")
            assert "-----> Running: http://ghsshapp." in out
            assert server.get("ghsshapp") == (200, "ghsshapp from the git host\n")
            db = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("rivetr.db*"))
            assert b"OPENSSH PRIVATE KEY" not in db
