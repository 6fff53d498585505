"""Bare git repositories of apps: creation, commit export and branch resets (pygit2 + git)."""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pygit2

from rivetr_git.errors import CheckoutFailed, RivetrError
from rivetr_git.names import validate_app_name

ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    message: str  # first line of the commit message


@dataclass(frozen=True)
class Export:
    path: Path
    files: int
    size: int
    submodules: tuple[str, ...] = ()  # their paths: a gitlink's commit is not in the repo


def _write_tree(
    repo: pygit2.Repository, commit: pygit2.Commit, archive: tarfile.TarFile
) -> tuple[int, int, list[str]]:
    """Like Repository.write_archive, but inflating each blob once, not twice (half the
    time for a 2 MB binary: 16 ms instead of 33 ms). Returns (files, bytes, the paths of
    submodules, which are left out)."""
    index = pygit2.Index()
    index.read_tree(commit.tree)
    files = size = 0
    submodules: list[str] = []
    for entry in index:
        if entry.mode == pygit2.enums.FileMode.COMMIT:
            submodules.append(entry.path)  # its commit is not in this repository
            continue
        _, content = repo.odb.read(entry.id)
        info = tarfile.TarInfo(entry.path)
        info.mtime = commit.committer.time
        info.uname = info.gname = "root"
        if entry.mode == pygit2.enums.FileMode.LINK:
            info.type = tarfile.SYMTYPE
            info.linkname = content.decode("utf-8", "surrogateescape")
            info.mode = 0o777
            archive.addfile(info)
            continue
        info.mode = entry.mode & 0o777
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
        files += 1
        size += len(content)
    return files, size, submodules


class Repos:
    """One bare repo per app under `root`, named `<app>.git`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, app: str) -> Path:
        # The name is validated again here: this is where it becomes a path.
        return self.root / f"{validate_app_name(app)}.git"

    def exists(self, app: str) -> bool:
        return (self.path(app) / "HEAD").is_file()

    async def create(self, app: str, default_branch: str) -> Path:
        path = self.path(app)

        def _init() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            pygit2.init_repository(str(path), bare=True, initial_head=default_branch)

        await asyncio.to_thread(_init)
        return path

    async def size(self, app: str) -> int:
        """Bytes the app's repository takes on disk (0 when it has none yet)."""

        def _walk() -> int:
            return sum(f.stat().st_size for f in self.path(app).rglob("*") if f.is_file())

        return await asyncio.to_thread(_walk)

    async def delete(self, app: str) -> None:
        """Remove the app's bare repository (a missing one is not an error)."""
        path = self.path(app)
        await asyncio.to_thread(shutil.rmtree, path, True)

    async def commit_info(self, app: str, sha: str) -> CommitInfo:
        def _read() -> CommitInfo:
            repo = pygit2.Repository(str(self.path(app)))
            commit = repo.get(sha)
            if not isinstance(commit, pygit2.Commit):
                raise CheckoutFailed(f"{sha[:7]} is not a commit")
            return CommitInfo(sha=sha, message=commit.message.strip().split("\n", 1)[0])

        return await asyncio.to_thread(_read)

    async def read_file(self, app: str, sha: str, path: str, limit: int = 1 << 20) -> bytes | None:
        """A file at the root of the commit's tree (None if absent). Larger than `limit`:
        CheckoutFailed, since it is read into memory."""

        def _read() -> bytes | None:
            repo = pygit2.Repository(str(self.path(app)))
            commit = repo.get(sha)
            if not isinstance(commit, pygit2.Commit):
                raise CheckoutFailed(f"{sha[:7]} is not a commit")
            try:
                entry = commit.tree[path]
            except KeyError:
                return None
            blob = repo.get(entry.id)
            if not isinstance(blob, pygit2.Blob):
                return None
            if blob.size > limit:
                raise CheckoutFailed(f"{path} is larger than {limit} bytes")
            return bytes(blob.data)

        try:
            return await asyncio.to_thread(_read)
        except (pygit2.GitError, ValueError) as exc:
            raise CheckoutFailed(f"cannot read {path} of {sha[:7]}: {exc}") from None

    async def export(self, app: str, sha: str, target: Path) -> Export:
        """Write the commit's tree as a tar (the build context). `.git` never enters it."""

        def _export() -> Export:
            repo = pygit2.Repository(str(self.path(app)))
            commit = repo.get(sha)
            if not isinstance(commit, pygit2.Commit):
                raise CheckoutFailed(f"{sha[:7]} is not a commit")
            with tarfile.open(target, "w") as archive:
                files, size, submodules = _write_tree(repo, commit, archive)
            return Export(path=target, files=files, size=size, submodules=tuple(submodules))

        try:
            return await asyncio.to_thread(_export)
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise CheckoutFailed(f"cannot export {sha[:7]}: {exc}") from None

    async def reset_branch(self, app: str, branch: str, expected: str, to: str | None) -> bool:
        """Move refs/heads/<branch> from `expected` to `to` (delete when None), atomically.

        Returns False when the branch no longer points at `expected` (a newer push owns it).
        """
        ref = f"refs/heads/{branch}"
        if to is None:
            args = ["update-ref", "-d", ref, expected]
        else:
            args = ["update-ref", ref, to, expected]
        proc = await asyncio.create_subprocess_exec(
            "git",
            "--git-dir",
            str(self.path(app)),
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            if b"but expected" in err or b"cannot lock ref" in err or b"unable to resolve" in err:
                return False
            raise RivetrError(f"cannot reset {ref} of {app}: {err.decode(errors='replace')}")
        return True
