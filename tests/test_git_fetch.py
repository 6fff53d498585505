"""Fetching an app's code from a real git host on loopback (tests/git_host.py): HTTPS with
a token, SSH with a deploy key, and the advice when credentials, branches or hosts fail."""

from __future__ import annotations

import os
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from rivetr_git.errors import CheckoutFailed
from rivetr_git.secrets.git_secrets import new_deploy_key
from rivetr_git.store.repos import FetchAuth, Repos
from tests.git_host import GitHttpHost, make_source_repo, ssh_git_host
from tests.helpers import GIT_ENV

TOKEN = "ghp_s3cr3t-token-value"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[GitHttpHost]:
    make_source_repo(tmp_path / "host", "ghprivate", branches=("main", "dev"))
    make_source_repo(tmp_path / "host", "ghpublic")
    with GitHttpHost(tmp_path / "host", TOKEN, public={"ghpublic"}) as served:
        yield served


@pytest.fixture
async def repos(tmp_path: Path) -> Repos:
    repos = Repos(tmp_path / "repos")
    await repos.create("ghapp", "main")
    return repos


def source_head(host: GitHttpHost, repo: str, ref: str = "main") -> str:
    return subprocess.run(
        ["git", "--git-dir", str(host.root / f"{repo}.git"), "rev-parse", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def shallow(repos: Repos, app: str) -> bool:
    return (repos.path(app) / "shallow").exists()


async def test_https_with_token_fetches_shallow_and_moves_the_branch(
    host: GitHttpHost, repos: Repos
) -> None:
    url = host.url("ghprivate")
    sha = await repos.fetch("ghapp", url, "main", FetchAuth(token=TOKEN), branch="main")
    assert sha == source_head(host, "ghprivate")
    assert shallow(repos, "ghapp")  # one commit, not the history
    repo = pygit2.Repository(str(repos.path("ghapp")))
    assert str(repo.references["refs/heads/main"].target) == sha
    info = await repos.commit_info("ghapp", sha)
    assert info.message == "second"
    # Another branch of the host deploys into the app's branch too.
    dev = await repos.fetch("ghapp", url, "dev", FetchAuth(token=TOKEN), branch="main")
    assert dev == source_head(host, "ghprivate", "dev")


async def test_public_repository_needs_no_credential(host: GitHttpHost, repos: Repos) -> None:
    sha = await repos.fetch("ghapp", host.url("ghpublic"), "main", FetchAuth(), branch="main")
    assert sha == source_head(host, "ghpublic")


async def test_private_repository_without_token_says_so(host: GitHttpHost, repos: Repos) -> None:
    with pytest.raises(CheckoutFailed) as failed:
        await repos.fetch("ghapp", host.url("ghprivate"), "main", FetchAuth(), branch="main")
    assert "refused no token" in str(failed.value)
    assert "git:set APP token=" in str(failed.value)


async def test_wrong_token_is_refused_and_never_printed(host: GitHttpHost, repos: Repos) -> None:
    wrong = "ghp_wrong-token-0123456789"
    with pytest.raises(CheckoutFailed) as failed:
        await repos.fetch(
            "ghapp", host.url("ghprivate"), "main", FetchAuth(token=wrong), branch="main"
        )
    message = str(failed.value)
    assert "refused the token set with git:set" in message
    assert wrong not in message
    assert not (repos.path("ghapp") / "refs" / "heads" / "main").exists()


async def test_missing_branch_lists_the_ones_that_exist(host: GitHttpHost, repos: Repos) -> None:
    with pytest.raises(CheckoutFailed) as failed:
        await repos.fetch(
            "ghapp", host.url("ghprivate"), "nope", FetchAuth(token=TOKEN), branch="main"
        )
    assert "no branch or tag 'nope'" in str(failed.value)
    assert "dev, main" in str(failed.value)


async def test_a_full_sha_fetches_history_and_deploys_that_commit(
    host: GitHttpHost, repos: Repos
) -> None:
    first = source_head(host, "ghprivate", "main~1")
    sha = await repos.fetch(
        "ghapp", host.url("ghprivate"), first, FetchAuth(token=TOKEN), branch="main"
    )
    assert sha == first


async def test_unreachable_host_says_so(repos: Repos) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CheckoutFailed) as failed:
        await repos.fetch(
            "ghapp", f"http://127.0.0.1:{port}/x.git", "main", FetchAuth(), branch="main"
        )
    assert "cannot reach" in str(failed.value)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """libgit2 reads known_hosts from its home dir: a temp one for the test."""
    old = pygit2.settings.homedir
    pygit2.settings.homedir = str(tmp_path / "home")
    yield tmp_path / "home"
    if old is not None:
        pygit2.settings.homedir = old


async def test_ssh_with_the_deploy_key(tmp_path: Path, repos: Repos, home: Path) -> None:
    make_source_repo(tmp_path / "sshhost", "ghssh")
    key, other = new_deploy_key("ghapp"), new_deploy_key("other")
    auth = FetchAuth(private_key=key.private_pem, public_key=key.public)
    with ssh_git_host(tmp_path / "sshhost", [key.public], home / ".ssh" / "known_hosts") as port:
        url = f"ssh://git@127.0.0.1:{port}/ghssh.git"
        sha = await repos.fetch("ghapp", url, "main", auth, branch="main")
        assert (await repos.commit_info("ghapp", sha)).message == "second"
        wrong = FetchAuth(private_key=other.private_pem, public_key=other.public)
        with pytest.raises(CheckoutFailed) as failed:
            await repos.fetch("ghapp", url, "main", wrong, branch="main")
        assert "refused the deploy key (git:key)" in str(failed.value)
        # An unknown host key is not trusted.
        (home / ".ssh" / "known_hosts").write_text("")
        with pytest.raises(CheckoutFailed) as untrusted:
            await repos.fetch("ghapp", url, "main", auth, branch="main")
        assert "known_hosts" in str(untrusted.value)


def add_submodule(host: GitHttpHost, work: Path, name: str) -> None:
    """Give the host's repo `name` (its work tree `work`) a submodule `lib` pointing at the
    host's repo ghlib by a relative URL, as projects on one host usually do."""
    lib = make_source_repo(host.root, "ghlib")
    (lib / "lib.txt").write_text("from the submodule\n")
    env = {**os.environ, **GIT_ENV}
    for args, cwd in (
        (["add", "lib.txt"], lib),
        (["commit", "-qm", "lib"], lib),
        (["push", "-q", str(host.root / "ghlib.git"), "HEAD:main"], lib),
        (
            [
                "-c",
                "protocol.file.allow=always",
                "submodule",
                "add",
                "-q",
                str(host.root / "ghlib.git"),
                "lib",
            ],
            work,
        ),
        (["config", "-f", ".gitmodules", "submodule.lib.url", "../ghlib.git"], work),
        (["add", "-A"], work),
        (["commit", "-qm", "with lib"], work),
        (["push", "-q", str(host.root / f"{name}.git"), "HEAD:main"], work),
    ):
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


async def test_submodules_are_fetched_with_the_same_token_and_exported(
    tmp_path: Path, repos: Repos
) -> None:
    work = make_source_repo(tmp_path / "host", "ghsuper")
    with GitHttpHost(tmp_path / "host", TOKEN) as host:
        add_submodule(host, work, "ghsuper")
        url = host.url("ghsuper")
        sha = await repos.fetch("ghapp", url, "main", FetchAuth(token=TOKEN), branch="main")
        export = await repos.export("ghapp", sha, tmp_path / "context.tar")
        assert export.submodules == ()
        with tarfile.open(tmp_path / "context.tar") as archive:
            member = archive.extractfile("lib/lib.txt")
            assert member is not None and member.read() == b"from the submodule\n"
        # A public superproject whose submodule is private: the failure names the
        # submodule and the credential (none) its host refused.
        host.public = {"ghsuper"}
        other = Repos(tmp_path / "other")
        await other.create("ghapp", "main")
        with pytest.raises(CheckoutFailed) as failed:
            await other.fetch("ghapp", url, "main", FetchAuth(), branch="main")
        assert "submodule lib:" in str(failed.value)
        assert "ghlib.git refused no token" in str(failed.value)
