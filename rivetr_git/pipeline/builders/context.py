"""Build contexts as tars: what a pushed commit's tar holds, and narrower contexts cut from it."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders.detect import Tree
from rivetr_git.pipeline.builders.recipe import DOCKERFILE

# Small files detection may read (all at the root of the commit).
_READ = frozenset(
    {
        "package.json",
        "Procfile",
        # What the built-in builder reads: manifests, version files, Python entry points.
        "requirements.txt",
        "pyproject.toml",
        "Pipfile",
        ".python-version",
        "runtime.txt",
        ".nvmrc",
        "go.mod",
        "app.py",
        "main.py",
        "wsgi.py",
        "asgi.py",
        "server.py",
        ".dockerignore",  # the built-in builder adds its Dockerfile to it
    }
)
_READ_LIMIT = 256 * 1024


def read_tree(context_tar: Path) -> Tree:
    """The paths of every file in the commit's tar, and the few small files detection reads."""
    paths: set[str] = set()
    contents: dict[str, bytes] = {}
    with tarfile.open(context_tar) as archive:
        for member in archive:
            name = str(PurePosixPath(member.name))
            paths.add(name)
            if name in _READ and member.isfile() and member.size <= _READ_LIMIT:
                handle = archive.extractfile(member)
                if handle is not None:
                    contents[name] = handle.read()
    return Tree(frozenset(paths), contents)


def subtree(
    source: Path,
    target: Path,
    directory: str,
    prefix: str = "",
    extra: Mapping[str, bytes] | None = None,
) -> int:
    """Write to `target` a tar of the files under `directory` of `source` (re-rooted under
    `prefix`), plus the `extra` files (in place of the source's files of those names).
    Returns how many files came from `source`. Raises BuildFailed when `directory` holds
    no file."""
    base = str(PurePosixPath(directory))
    strip = "" if base == "." else base + "/"
    copied = 0
    with tarfile.open(source) as src, tarfile.open(target, "w") as out:
        for member in src:
            name = str(PurePosixPath(member.name))
            if strip and not name.startswith(strip):
                continue
            member.name = prefix + name[len(strip) :]
            if extra and member.name in extra:
                continue
            out.addfile(member, src.extractfile(member) if member.isfile() else None)
            copied += 1
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            out.addfile(info, io.BytesIO(data))
    if copied == 0:
        target.unlink(missing_ok=True)
        raise BuildFailed(
            f"{directory}/ is not in the pushed commit (or is empty); "
            "fix the path setting or commit the directory"
        )
    return copied


def ignore_dockerfile(tree: Tree) -> dict[str, bytes]:
    """A .dockerignore naming the Dockerfile rivetr writes (DOCKERFILE): the engine then
    leaves the file out of the build context, so `COPY . ./` does not change with it (it
    names the deployment: recipe.stage_end) and stays cached for an unchanged tree. The
    app's own .dockerignore gets the line appended (kept as it is when too large to have
    been read)."""
    if not tree.has(".dockerignore"):
        return {".dockerignore": f".dockerignore\n{DOCKERFILE}\n".encode()}
    own = tree.contents.get(".dockerignore")
    if own is None:
        return {}
    return {".dockerignore": own.rstrip(b"\n") + f"\n{DOCKERFILE}\n".encode()}


def extract(source: Path, target: Path) -> None:
    """Unpack the commit's tar into the directory `target` (for builders that take a dir)."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source) as archive:
        # 'data' refuses absolute paths, '..' and links out of the tree.
        archive.extractall(target, filter="data")
    # Files keep the modes git gave them; the dirs git does not store were made under the
    # server's private umask (0700) and would reach images so: a non-root app could not
    # read its own files. They stay private on the host, inside the 0700 data dir.
    for directory in (target, *(p for p in target.rglob("*") if p.is_dir() and not p.is_symlink())):
        directory.chmod(0o755)
