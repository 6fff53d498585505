"""What the built-in builder's languages share: the images, the generated Dockerfile with its
extra files, the app user, build-time args, version pins and the Procfile's web line.

Pure text: every Dockerfile is unit-tested without an engine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rivetr_git.errors import BuildFailed, CheckoutFailed
from rivetr_git.pipeline import procfile
from rivetr_git.pipeline.builders.detect import Tree

DOCKERFILE = ".rivetr.Dockerfile"  # the generated file's name in the build context
APP_DIR = "/app"
UID = 10001  # the app's user: not root, and no uid an image is likely to have taken


@dataclass(frozen=True)
class Images:
    """The settings python_image, node_image, go_image, go_runtime_image and
    static_server_image."""

    python: str = "python:3.12-slim"
    node: str = "node:20-slim"
    go: str = "golang:1.22"
    go_runtime: str = "debian:bookworm-slim"
    static_server: str = "nginx:1.27-alpine"


@dataclass(frozen=True)
class Recipe:
    dockerfile: str
    notes: tuple[str, ...] = ()  # printed in the push: the image, versions, the start command
    extra: Mapping[str, bytes] = field(default_factory=dict)  # generated context files


def add_user() -> str:
    """A RUN step creating the app's user and its home, the app directory (Debian's useradd,
    else busybox's adduser for Alpine-based images)."""
    return (
        f"RUN (useradd --system --uid {UID} --user-group --home-dir {APP_DIR} --no-create-home "
        f"app 2>/dev/null || adduser -S -D -H -u {UID} -h {APP_DIR} app) "
        f"&& mkdir -p {APP_DIR} && chown {UID}:{UID} {APP_DIR}\n"
    )


def stage_end(stage_labels: Mapping[str, str]) -> str:
    """The last step of a stage that the final image only copies from. The engine keeps
    such a stage's result as an untagged image; these labels (server instance, app,
    deployment) tell whose it is, so it goes when its release's image goes. Last in the
    stage: the steps before it (the dependency install) stay cached for the next push."""
    pairs = (f"{json.dumps(k)}={json.dumps(v)}" for k, v in sorted(stage_labels.items()))
    return "LABEL " + " ".join(pairs) + "\n"


def run_as_app() -> str:
    return f"USER {UID}:{UID}\n"


def build_args(names: Sequence[str]) -> str:
    """ARG lines for the build-time env vars (builds:set APP env=...): RUN steps see them."""
    return "".join(f"ARG {name}\n" for name in names)


def copy_files(paths: Sequence[str], target: str = "./") -> str:
    """COPY of files that exist in the tree (one step: one layer)."""
    if not paths:
        return ""
    return "COPY " + " ".join(_quote(p) for p in paths) + f" {target}\n"


def cmd(command: str) -> str:
    """CMD through the image's shell, as Procfile commands run: $PORT expands."""
    return 'CMD ["sh", "-c", ' + json.dumps(command) + "]\n"


def web_command(tree: Tree) -> str | None:
    """The Procfile's web line, if any."""
    try:
        return procfile.parse(_text(tree, "Procfile")).web
    except CheckoutFailed as exc:  # checked at cloning already; say so again if not
        raise BuildFailed(str(exc)) from None


def no_start(language: str, advice: str) -> BuildFailed:
    return BuildFailed(
        f"no start command for this {language} app: add a Procfile with a web line "
        f"({advice}), or {_ADVICE[language]}"
    )


_ADVICE = {
    "Python": "an app.py or main.py (or a gunicorn/uvicorn dependency and an app object)",
    "Node.js": 'a "start" script in package.json (or a server.js or index.js)',
}

_OFFICIAL_TAG = re.compile(r"^(\d+(?:\.\d+)*)(-[A-Za-z0-9_.-]+)?$")


def pin(image: str, official: str, version: str | None, source: str) -> tuple[str, str | None]:
    """The image to build from when the app asks for `version` (from `source`), and the
    version the build must check (None: nothing to check).

    An official-style image (`python:3.12-slim`, `mirror.example/library/node:20-slim`:
    the repository's last part is `official`, the tag a version) gets the app's version in
    its tag. Any other image is used as configured, and the build checks it has that
    version, failing with both versions named rather than silently running another one.
    """
    if version is None:
        return image, None
    name, _, tag = image.rpartition(":")
    match = _OFFICIAL_TAG.match(tag) if name and "/" not in tag else None
    if match and name.rsplit("/", 1)[-1] == official:
        return f"{name}:{version}{match[2] or ''}", None
    return image, version


def major_minor(text: str) -> str | None:
    """'3.12' of '3.12', '3.12.1', 'python-3.12.1'; None when there is no such version."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return f"{match[1]}.{match[2]}" if match else None


def contents(tree: Tree, name: str) -> str:
    return _text(tree, name) or ""


def _text(tree: Tree, name: str) -> str | None:
    data = tree.contents.get(name)
    return None if data is None else data.decode("utf-8", "replace")


def _quote(path: str) -> str:
    # Dockerfile COPY splits on whitespace: the JSON form would be needed for such names.
    if any(c.isspace() for c in path):
        raise BuildFailed(
            f"{path!r}: the built-in builder cannot copy a file whose name has spaces"
        )
    return path
