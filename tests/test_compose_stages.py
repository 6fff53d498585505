"""A compose group's Dockerfiles get their copy-only stages labelled (files only, no engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders.compose_stages import label_compose_stages

OWNER = {"rivetr.instance": "inst", "rivetr.app": "shop", "rivetr.deployment": "4"}
STAGED = "FROM golang AS build\nRUN go build -o /app .\nFROM debian\nCOPY --from=build /app /app\n"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_service_with_stages_builds_a_labelled_copy_left_out_of_its_context(
    tmp_path: Path,
) -> None:
    src = tree(
        tmp_path,
        {
            "web/Dockerfile": STAGED,
            "web/.dockerignore": "node_modules",
            "db/Dockerfile": "FROM x\n",
        },
    )
    data: dict[str, Any] = {
        "services": {
            "web": {"build": {"context": "web"}},
            "db": {"build": "db"},
            "cache": {"image": "redis"},
        }
    }
    note = label_compose_stages(src, data, OWNER)
    assert note == "build stage web/build is labelled to go with this release"
    assert data["services"]["web"]["build"] == {
        "context": "web",
        "dockerfile": ".rivetr.web.Dockerfile",
    }
    assert data["services"]["db"] == {"build": "db"}  # one stage: built as pushed
    copy = (src / "web/.rivetr.web.Dockerfile").read_text()
    assert copy.split("\n")[2].startswith('LABEL "rivetr.app"="shop" "rivetr.deployment"="4"')
    assert (src / "web/Dockerfile").read_text() == STAGED
    assert (src / "web/.dockerignore").read_text() == "node_modules\n.rivetr.web.Dockerfile\n"
    assert not (src / "db/.dockerignore").exists()


def test_a_context_without_dockerignore_gets_one_that_names_itself(tmp_path: Path) -> None:
    src = tree(tmp_path, {"docker/web.Dockerfile": STAGED})
    build = {"context": ".", "dockerfile": "docker/web.Dockerfile", "target": "build"}
    data: dict[str, Any] = {"services": {"web": {"build": build}, "api": {"build": "."}}}
    tree(tmp_path, {"Dockerfile": STAGED})
    assert label_compose_stages(src, data, OWNER) == (
        "build stage api/build is labelled to go with this release"
    )
    assert data["services"]["web"]["build"]["dockerfile"] == "docker/web.Dockerfile"  # target
    assert (src / ".dockerignore").read_text() == ".dockerignore\n.rivetr.api.Dockerfile\n"


def test_a_pushed_file_of_the_copys_name_is_replaced_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("host file\n")
    src = tree(tmp_path / "src", {"Dockerfile": STAGED})
    (src / ".rivetr.web.Dockerfile").symlink_to(outside)
    label_compose_stages(src, {"services": {"web": {"build": "."}}}, OWNER)
    assert outside.read_text() == "host file\n"
    assert not (src / ".rivetr.web.Dockerfile").is_symlink()


def test_a_missing_dockerfile_fails_the_build_with_advice(tmp_path: Path) -> None:
    with pytest.raises(BuildFailed, match="service web: cannot read its Dockerfile web/Dockerfile"):
        label_compose_stages(tmp_path, {"services": {"web": {"build": "web"}}}, OWNER)
