"""Pushed trees the build cannot use fail with what happened and what to do: submodules,
and Dockerfiles that are symlinks out of a narrowed build context. Real SSH, real engine."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import HTTPD_DOCKERFILE, AppRepo, Key, Server
from tests.test_admin_verbs import ok

SUBMODULE_SHA = "1234567890abcdef1234567890abcdef12345678"  # never in the app's repository


def test_a_submodule_is_reported_and_a_build_that_needs_it_says_why_it_failed(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    repo.write(
        ".gitmodules",
        '[submodule "vendor/lib"]\n\tpath = vendor/lib\n\turl = https://example.com/lib.git\n',
    )
    repo.git("add", ".gitmodules")
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{SUBMODULE_SHA},vendor/lib")
    repo.git("commit", "-q", "-m", "a submodule the build does not use")
    first = repo.push(server.remote("mxsubmod"))
    assert first.returncode == 0, first.stderr  # not needed: deploys, and says so
    assert "submodules in a pushed tree are not fetched, so vendor/lib is empty" in first.stderr

    repo.write(
        "Dockerfile",
        HTTPD_DOCKERFILE.replace("COPY www /www", "COPY www /www\nCOPY vendor/lib /lib"),
    )
    repo.git("add", "Dockerfile")  # not `add -A`: that drops the gitlink (no checkout)
    repo.git("commit", "-q", "-m", "the build needs it")
    second = repo.push(server.remote("mxsubmod"))
    assert second.returncode != 0
    failure = next(line for line in second.stderr.splitlines() if "Deploy failed" in line)
    assert "submodules in a pushed tree are not fetched" in failure, failure
    assert "git rm --cached vendor/lib" in failure
    assert server.get("mxsubmod") == (200, "hello v1\n")  # the old release still serves


def test_a_dockerfile_symlinked_out_of_a_narrowed_context_fails_clearly(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = AppRepo(workdir / "app", alice)
    (repo.path / "sub").mkdir()
    repo.git("mv", "busybox", "www", "sub/")
    repo.commit("the app in sub/")
    ok(server, alice, "apps:create", "mxlink")
    ok(server, alice, "builds:set", "mxlink", "context=sub")

    for target, why in (
        ("/etc/hostname", "links to /etc/hostname, which is outside the pushed tree"),
        ("../outside.Dockerfile", "is outside the pushed tree"),
        (
            "docker/missing.Dockerfile",
            "links to docker/missing.Dockerfile, which is not in the pushed commit",
        ),
    ):
        os.remove(repo.path / "Dockerfile")
        os.symlink(target, repo.path / "Dockerfile")
        repo.commit(f"Dockerfile -> {target}")
        pushed = repo.push(server.remote("mxlink"))
        assert pushed.returncode != 0
        assert why in pushed.stderr, pushed.stderr
        assert "internal error" not in pushed.stderr and "KeyError" not in pushed.stderr

    # A link to a file elsewhere in the tree is followed: it builds.
    (repo.path / "docker").mkdir()
    repo.write("docker/web.Dockerfile", HTTPD_DOCKERFILE)
    os.remove(repo.path / "Dockerfile")
    os.symlink("docker/web.Dockerfile", repo.path / "Dockerfile")
    repo.commit("Dockerfile -> docker/web.Dockerfile")
    pushed = repo.push(server.remote("mxlink"))
    assert pushed.returncode == 0, pushed.stderr
    assert server.get("mxlink") == (200, "hello v1\n")
