"""The built-in builder's Go recipe: a static binary (CGO off) compiled in `go_image`, run
from `go_runtime_image` as the app's user, next to the source tree (templates and assets
are found where the code expects them). Modules are downloaded from go.mod and go.sum
before the source is copied (skipped with a vendor/ directory), so a push that changes
only code reuses that layer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from rivetr_git.pipeline.builders import recipe
from rivetr_git.pipeline.builders.detect import Tree
from rivetr_git.pipeline.builders.recipe import Images, Recipe

_GO_LINE = re.compile(r"^go\s+(\d+\.\d+)", re.MULTILINE)
_MODULE = re.compile(r"^module\s+(\S+)", re.MULTILINE)
BINARY = "/usr/local/bin/app"


def plan(
    tree: Tree, images: Images, arg_names: Sequence[str], stage_labels: Mapping[str, str]
) -> Recipe:
    go_mod = recipe.contents(tree, "go.mod")
    line = _GO_LINE.search(go_mod)
    version = line[1] if line else None
    # go.mod's line is a minimum, and newer toolchains build older modules: an official-style
    # image is moved up to it, never down. Go itself refuses a toolchain that is too old.
    image, _ = recipe.pin(images.go, "golang", _newer(version, images.go), "go.mod")
    package = _main_package(tree)
    vendored = tree.has("vendor/modules.txt")
    download = "" if vendored else "RUN go mod download\n"
    manifests = ["go.mod", *(["go.sum"] if tree.has("go.sum") else [])]
    web = recipe.web_command(tree)
    start, why = (web, "the Procfile's web line") if web else (BINARY, "the binary")
    text = (
        f"FROM {image} AS build\n"
        # No -trimpath: it would recompile the standard library on every build.
        "ENV CGO_ENABLED=0\n"
        "WORKDIR /src\n"
        + recipe.build_args(arg_names)
        + recipe.copy_files(manifests)
        + download
        + "COPY . ./\n"
        # With the CA certificates for the binary's HTTPS, when the build image has them
        # (one step: each step costs a container).
        + f'RUN go build -ldflags="-s -w" -o /out/app {package} && mkdir -p /out/certs && '
        "(cp /etc/ssl/certs/ca-certificates.crt /out/certs/ 2>/dev/null || true)\n"
        + recipe.stage_end(stage_labels)
        + f"FROM {images.go_runtime}\n"
        + recipe.add_user()
        + "COPY --from=build /out/certs/ /etc/ssl/certs/\n"
        + f"COPY --from=build /out/app {BINARY}\n"
        + "WORKDIR /app\n"
        + f"COPY --chown={recipe.UID}:{recipe.UID} . ./\n"
        + "ENV HOME=/app\n"
        + recipe.run_as_app()
        + recipe.cmd(start)
    )
    module = _MODULE.search(go_mod)
    notes = (
        f"go image: {image}" + (f" (go {version} from go.mod)" if version else ""),
        f"builds {package} of {module[1] if module else 'the module'}"
        + (" (vendor/)" if vendored else "")
        + f", runs on {images.go_runtime}",
        f"start: {start} ({why})",
    )
    return Recipe(text, notes)


def _newer(version: str | None, image: str) -> str | None:
    """`version` when it is newer than the version in `image`'s tag (or the tag has none)."""
    tag = recipe.major_minor(image.rpartition(":")[2])
    if version is None or tag is None:
        return version
    return version if _key(version) > _key(tag) else None


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _main_package(tree: Tree) -> str:
    """The package to build: the root's, else the one command under cmd/."""
    if any("/" not in p and p.endswith(".go") for p in tree.paths):
        return "."
    commands = sorted(
        {p.split("/")[1] for p in tree.paths if p.startswith("cmd/") and p.count("/") >= 2}
    )
    return f"./cmd/{commands[0]}" if len(commands) == 1 else "."
