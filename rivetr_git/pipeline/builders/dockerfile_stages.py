"""Labelling the build stages of an app's own multi-stage Dockerfile.

The engine keeps the result of a stage the image only copies from (`COPY --from=builder`)
as an untagged image that nothing removes: disk that grows with every push, and a history
that holds the values of the build-time env vars its RUN steps saw. A LABEL step with the
deployment's labels (recipe.stage_end) at the end of such a stage lets the release's clean-up
find and remove it, as it does for the built-in builder's stages.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from dockerfile_parse import DockerfileParser


@dataclass(frozen=True)
class _Stage:
    line: int  # where its FROM starts (0-based)
    base: str  # what it is built FROM, lower case
    name: str  # its AS name, lower case ("" when unnamed)


def label_stages(dockerfile: bytes, label_step: str, target: str | None) -> tuple[bytes, list[str]]:
    """`dockerfile` with `label_step` (one line) at the end of each stage that another
    stage only copies from, and those stages' names (their index when unnamed). Not the
    stage that becomes the image (the last one, or `target`), and not a stage another
    builds FROM: that one is a parent of its child's image, goes with it, and the child's
    cached steps would not survive a step that changes on every push. A Dockerfile that is
    not UTF-8 stays as it is (the engine reads it as UTF-8 and says what is wrong)."""
    try:
        text = dockerfile.decode()
    except UnicodeDecodeError:
        return dockerfile, []
    structure = DockerfileParser(fileobj=io.StringIO(text), env_replace=False).structure
    stages = [_stage(i["startline"], i["value"]) for i in structure if i["instruction"] == "FROM"]
    named = [s.name for s in stages]
    image = named.index(target.lower()) if target and target.lower() in named else len(stages) - 1
    bases = {s.base for s in stages}
    leaves = [
        i for i, s in enumerate(stages[:-1]) if i != image and not (s.name and s.name in bases)
    ]
    if not leaves:
        return dockerfile, []
    lines = text.split("\n")  # as the parser counts them: only \n ends a line
    for i in reversed(leaves):  # from the end, so the line numbers before stay right
        lines.insert(stages[i + 1].line, label_step.rstrip("\n"))
    return "\n".join(lines).encode(), [stages[i].name or str(i) for i in leaves]


def labelled_note(stages: list[str]) -> str:
    """What the push says about the stages labelled."""
    which = f"stages {', '.join(stages)} are" if len(stages) > 1 else f"stage {stages[0]} is"
    return f"build {which} labelled to go with this release"


def _stage(line: int, value: str) -> _Stage:
    words = [w for w in value.split() if not w.startswith("--")]  # --platform=...
    base = words[0].lower() if words else ""
    name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else ""
    return _Stage(line, base, name)
