"""Build type detection: each rule on a small fixture tree, explicit choices, bad values.
Pure logic, plus the tar helpers that feed it (on real tars in a temp dir)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import yaml

from rivetr_git.admin.app_settings import parse_assignments
from rivetr_git.errors import BuildFailed, ValidationError
from rivetr_git.pipeline.builders.compose import rewrite, routed_service
from rivetr_git.pipeline.builders.context import read_tree, subtree
from rivetr_git.pipeline.builders.detect import Tree, choose, detect


def tree(*paths: str, **contents: bytes) -> Tree:
    return Tree(frozenset(paths), {k.replace("_", "."): v for k, v in contents.items()})


@pytest.mark.parametrize(
    ("paths", "build_type", "reason"),
    [
        (("Dockerfile", "app.py", "requirements.txt"), "dockerfile", "found Dockerfile"),
        (("Containerfile", "go.mod"), "dockerfile", "found Containerfile"),
        (("compose.yaml", "package.json"), "compose", "found compose.yaml"),
        (("docker-compose.yml",), "compose", "found docker-compose.yml"),
        (("railpack.toml", "package.json"), "railpack", "found railpack.toml"),
        (("project.toml", "requirements.txt"), "pack", "found project.toml"),
        (("nixpacks.toml", "index.html"), "nixpacks", "found nixpacks.toml"),
        (("index.html", "style.css"), "static", "index.html and no server-side project files"),
        (("public/index.html", "README.md"), "static", "found public/index.html"),
        (("vite.config.ts", "package.json", "dist/index.html"), "static", "(Vite)"),
        (("mkdocs.yml", "docs/index.md", "site/index.html"), "static", "(MkDocs)"),
        (("package.json", "index.js"), "buildpack", "found package.json"),
        (("requirements.txt", "app.py"), "buildpack", "found requirements.txt"),
        (("pyproject.toml",), "buildpack", "found pyproject.toml"),
        (("go.mod", "main.go"), "buildpack", "found go.mod"),
    ],
)
def test_each_rule_on_a_fixture_tree(paths: tuple[str, ...], build_type: str, reason: str) -> None:
    found = detect(tree(*paths))
    assert found.build_type == build_type
    assert reason in found.reason


def test_the_order_is_dockerfile_compose_railpack_pack_nixpacks_static_manifest() -> None:
    everything = [
        "Dockerfile",
        "compose.yaml",
        "railpack.toml",
        "project.toml",
        "nixpacks.toml",
        "index.html",
    ]
    expected = ["dockerfile", "compose", "railpack", "pack", "nixpacks", "static"]
    for i, build_type in enumerate(expected):
        assert detect(tree(*everything[i:])).build_type == build_type, everything[i:]
        assert detect(tree(*everything[i:], "go.mod")).build_type == (
            build_type if build_type != "static" else "buildpack"
        )  # a manifest: not static


def test_a_framework_whose_site_is_not_committed_goes_to_the_builder() -> None:
    found = detect(tree("vite.config.ts", "package.json", "src/main.ts", "index.html"))
    assert (found.label, found.publish_dir) == ("buildpack/static", "dist")
    assert "found package.json and vite.config.ts (Vite)" in found.reason
    other = detect(tree("vite.config.ts", "package.json"), builder="nixpacks")
    assert other.build_type == "nixpacks" and "package.json" in other.reason


def test_create_react_app_is_recognised_from_package_json() -> None:
    found = detect(
        tree(
            "package.json",
            "src/App.js",
            "build/index.html",
            package_json=b'{"dependencies": {"react-scripts": "5.0.1"}}',
        )
    )
    assert (found.build_type, found.publish_dir) == ("static", "build")


def test_the_configured_dockerfile_path_and_builder_are_used() -> None:
    found = detect(
        tree("docker/web.Dockerfile", "package.json"), dockerfile="docker/web.Dockerfile"
    )
    assert (found.build_type, found.dockerfile) == ("dockerfile", "docker/web.Dockerfile")
    assert detect(tree("go.mod"), builder="pack").build_type == "pack"
    # A configured path that is not there does not match the root Dockerfile's rule.
    assert detect(tree("go.mod"), dockerfile="web.Dockerfile").label == "buildpack/go"


def test_languages_the_built_in_builder_does_not_build_go_to_a_configured_tool() -> None:
    gems = tree("Gemfile", "config.ru", "index.html")
    with pytest.raises(BuildFailed, match=r"builds Python, Node.js and Go.*found Gemfile|Gemfile"):
        detect(gems)
    assert detect(gems, builder="nixpacks").reason.startswith("found Gemfile")


def test_a_configured_publish_dir_makes_a_static_site() -> None:
    found = detect(tree("package.json", "www/index.html"), publish_dir="www")
    assert (found.build_type, found.publish_dir) == ("static", "www")


def test_nothing_to_build_says_what_to_add() -> None:
    with pytest.raises(BuildFailed, match=r"cannot tell how to build.*build_type"):
        detect(tree("README.md", "notes.txt"))


def test_the_app_setting_beats_rivetr_toml_beats_detection() -> None:
    t = tree("Dockerfile", "index.html")
    assert choose(t, None, None).build_type == "dockerfile"
    assert choose(t, "auto", None).build_type == "dockerfile"
    assert choose(t, None, "static").build_type == "static"
    found = choose(t, "static", "dockerfile")
    assert found.build_type == "static" and "app's build_type" in found.reason
    assert choose(t, "nixpacks", None).build_type == "nixpacks"


def test_an_app_set_to_static_never_falls_through_to_the_dockerfile() -> None:
    # Rivetr's trap: an app saved as static built its Dockerfile instead.
    with pytest.raises(BuildFailed, match=r"static.*index.html is not in the pushed commit"):
        choose(tree("Dockerfile", "app.py"), "static", None)
    assert (
        choose(
            tree("Dockerfile", "dist/index.html"), "static", None, publish_dir="dist"
        ).publish_dir
        == "dist"
    )


def test_an_explicit_type_whose_file_is_missing_fails_clearly() -> None:
    with pytest.raises(BuildFailed, match="Dockerfile is not in the pushed commit"):
        choose(tree("package.json"), "dockerfile", None)
    with pytest.raises(BuildFailed, match=r"compose.*none of compose\.yaml"):
        choose(tree("Dockerfile"), None, "compose")


def test_unknown_build_types_are_refused_when_set() -> None:
    with pytest.raises(ValidationError, match="'heroku' is not a build type"):
        parse_assignments(["build_type=heroku"])
    with pytest.raises(ValidationError, match=r"rivetr\.toml"):
        choose(tree("Dockerfile"), None, "buildpacks")
    assert parse_assignments(["build_type=static"]) == {"build_type": "static"}
    assert parse_assignments(["build_type=auto"]) == {"build_type": None}
    assert parse_assignments(["build_type="]) == {"build_type": None}


def test_build_option_settings_are_validated() -> None:
    assert parse_assignments(
        [
            "build_context=services/web",
            "build_target=prod",
            "build_no_cache=true",
            "publish_dir=dist",
        ]
    ) == {
        "build_context": "services/web",
        "build_target": "prod",
        "build_no_cache": True,
        "publish_dir": "dist",
    }
    for bad in (
        "build_context=../up",
        "build_target=no spaces",
        "build_no_cache=maybe",
        "publish_dir=/abs",
        "compose_service=a b",
    ):
        with pytest.raises(ValidationError):
            parse_assignments([bad])


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_read_tree_and_subtree_on_a_real_tar(tmp_path: Path) -> None:
    source = make_tar(
        tmp_path / "c.tar",
        {
            "package.json": b"{}",
            "dist/index.html": b"<h1>",
            "dist/a/b.js": b"x",
            "src/main.ts": b"y",
        },
    )
    t = read_tree(source)
    assert t.has("dist/index.html") and t.has_dir("dist") and not t.has_dir("lib")
    assert t.contents == {"package.json": b"{}"}
    target = tmp_path / "site.tar"
    assert subtree(source, target, "dist", "site/", {"Dockerfile": b"FROM x\n"}) == 2
    with tarfile.open(target) as archive:
        assert sorted(archive.getnames()) == ["Dockerfile", "site/a/b.js", "site/index.html"]
    with pytest.raises(BuildFailed, match="lib/ is not in the pushed commit"):
        subtree(source, tmp_path / "none.tar", "lib")
    assert not (tmp_path / "none.tar").exists()


# --- compose files as a deployment runs them ----------------------------------------------------


def test_compose_routes_the_setting_else_the_one_publishing_else_web() -> None:
    two = {"api": {"ports": ["80"]}, "db": {}}
    assert routed_service(two, None, "c.yml") == "api"
    assert routed_service({"web": {}, "db": {}}, None, "c.yml") == "web"
    assert routed_service(two, "db", "c.yml") == "db"
    with pytest.raises(BuildFailed, match="'cache' is not a service"):
        routed_service(two, "cache", "c.yml")
    with pytest.raises(BuildFailed, match="none publishes a port and none is called web"):
        routed_service({"a": {}, "b": {}}, None, "c.yml")
    with pytest.raises(BuildFailed, match="several publish ports"):
        routed_service({"a": {"ports": ["1"]}, "b": {"ports": ["2"]}}, None, "c.yml")


def test_compose_rewrite_isolates_the_group_and_publishes_only_the_routed_service() -> None:
    text = """
services:
  web:
    build: .
    container_name: fixed
    ports: ["8000:5000"]
    environment: ["A=1"]
    labels: ["team=x"]
  worker:
    build: ./worker
    ports: ["9000:9000"]
  db:
    image: postgres
"""
    data, group = rewrite(
        yaml.safe_load(text), "c.yml", "inst", "shop", 7, None, port=5000, env_names=["B"]
    )
    web, worker, db = (data["services"][s] for s in ("web", "worker", "db"))
    assert group.project == "rivetr-inst-shop-7" and group.service == "web"
    assert web["ports"] == ["127.0.0.1::5000"] and "container_name" not in web
    # The app's env by name only: compose takes the value from its own environment.
    assert web["environment"] == {"A": "1", "B": None, "PORT": "5000"}
    assert web["restart"] == "no" and "version" not in data
    assert web["labels"]["team"] == "x" and web["labels"]["rivetr.deployment"] == "7"
    assert web["image"] == group.image == "rivetr-inst/shop:7"
    assert worker["image"] == "rivetr-inst/shop:7-worker" and "ports" not in worker
    assert db["image"] == "postgres" and db["labels"]["rivetr.app"] == "shop"
    with pytest.raises(BuildFailed, match=r"routed service db of c\.yml has no build"):
        rewrite(yaml.safe_load(text), "c.yml", "inst", "shop", 7, "db")
