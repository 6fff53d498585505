"""The build stages of a compose group's Dockerfiles, labelled as an app's own Dockerfile's
are (dockerfile_stages), so that they go with their release.

Each building service whose Dockerfile has stages to label gets a copy with the labels,
`.rivetr.<service>.Dockerfile` in its build context, named by the rewritten compose file;
the context's .dockerignore names the copy, so `COPY .` does not change with it. The source
is the deployment's own extract (links out of the tree were refused when it was unpacked).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders.dockerfile_stages import label_stages, labelled_note
from rivetr_git.pipeline.builders.recipe import stage_end

_IGNORE = ".dockerignore"


def label_compose_stages(source: Path, data: dict[str, Any], owner: Mapping[str, str]) -> str:
    """Label the stages of each building service of `data` (the rewritten file, paths
    relative to `source`), pointing its build at the labelled copy. Returns what the push
    says of it, stages named `service/stage` ("" when none was labelled). Raises
    BuildFailed for a Dockerfile that cannot be read."""
    done: list[str] = []
    for service, spec in data["services"].items():
        build = spec.get("build")
        if not build:
            continue
        build = {"context": build} if isinstance(build, str) else dict(build)
        context = source / build.get("context", ".")
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        try:
            content = dockerfile.read_bytes()
        except OSError as exc:
            raise BuildFailed(
                f"service {service}: cannot read its Dockerfile {dockerfile.relative_to(source)}"
                f" ({exc.strerror}); commit it, or fix build.dockerfile"
            ) from None
        labelled, stages = label_stages(content, stage_end(owner), build.get("target"))
        if not stages:
            continue
        copy = f".rivetr.{service}.Dockerfile"
        _replace(context / copy, labelled)
        _ignore(context, copy)
        build["dockerfile"] = copy
        spec["build"] = build
        done += [f"{service}/{stage}" for stage in stages]
    return labelled_note(done) if done else ""


def _replace(path: Path, content: bytes) -> None:
    """Write `path` anew: a pushed file or link of that name is replaced, never followed."""
    path.unlink(missing_ok=True)
    with path.open("xb") as out:
        out.write(content)


def _ignore(context: Path, name: str) -> None:
    """The context's .dockerignore with `name` appended (made when missing; left alone
    when it is not a file)."""
    path = context / _IGNORE
    if path.exists() and not path.is_file():
        return
    own = path.read_bytes() if path.is_file() else f"{_IGNORE}\n".encode()
    _replace(path, own.rstrip(b"\n") + f"\n{name}\n".encode())
