"""The built-in builder's generated Dockerfiles and its language detection: pure text on
fixture trees (the end-to-end builds are in tests/test_buildpack.py)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders import buildpack
from rivetr_git.pipeline.builders.detect import Tree, detect
from rivetr_git.pipeline.builders.recipe import DOCKERFILE, Images, Recipe, pin


def tree(**files: str) -> Tree:
    return Tree(frozenset(files), {name: text.encode() for name, text in files.items()})


OWNER = {"rivetr.instance": "abc123", "rivetr.app": "shop", "rivetr.deployment": "7"}
STAGE_LABELS = 'LABEL "rivetr.app"="shop" "rivetr.deployment"="7" "rivetr.instance"="abc123"\n'


def made(files: dict[str, str], images: Images | None = None, args: tuple[str, ...] = ()) -> Recipe:
    t = tree(**files)
    return buildpack.plan(t, detect(t), images or Images(), list(args), OWNER)


def before(text: str, first: str, second: str) -> bool:
    return text.index(first) < text.index(second)


def test_python_installs_requirements_and_what_they_name_before_the_source() -> None:
    r = made(
        {
            "requirements.txt": "--no-index\n--find-links ./vendor\n-r base.txt\nx==1\n",
            "base.txt": "",
            "vendor/x-1-py3-none-any.whl": "",
            "app.py": "",
        },
        args=("TOKEN",),
    )
    text = r.dockerfile
    for line in ("COPY requirements.txt", "COPY vendor vendor", "COPY base.txt base.txt"):
        assert before(text, line, "RUN pip install -r requirements.txt"), text
    assert before(text, "ARG TOKEN", "RUN pip install")
    assert before(text, "RUN pip install", "COPY --chown=10001:10001 . ./")
    assert text.endswith('USER 10001:10001\nCMD ["sh", "-c", "python app.py"]\n')
    assert "start: python app.py (found app.py)" in r.notes


def test_a_requirements_file_installing_the_project_itself_installs_after_the_source() -> None:
    text = made({"requirements.txt": "-e .\n", "main.py": ""}).dockerfile
    assert before(text, "COPY --chown", "RUN pip install -r requirements.txt")


@pytest.mark.parametrize(
    ("files", "install"),
    [
        ({"uv.lock": ""}, "uv sync --frozen --no-dev --no-install-project"),
        ({"poetry.lock": ""}, "poetry install --only main --no-root"),
        ({"Pipfile": "", "Pipfile.lock": ""}, "pipenv requirements"),
    ],
)
def test_python_lock_files_choose_the_tool(files: dict[str, str], install: str) -> None:
    project = {} if "Pipfile" in files else {"pyproject.toml": "[project]\nname = 'x'\n"}
    assert install in made({**project, **files, "app.py": ""}).dockerfile


def test_pyproject_without_a_lock_installs_its_dependencies_then_the_project() -> None:
    r = made(
        {
            "pyproject.toml": "[project]\nname='x'\ndependencies=['flask>=3']\n"
            "[build-system]\nrequires=['setuptools']\n",
            "main.py": "",
        }
    )
    assert r.extra[".rivetr.requirements.txt"] == b"flask>=3\n"
    assert before(r.dockerfile, "RUN pip install -r .rivetr.requirements.txt", "COPY --chown")
    assert before(r.dockerfile, "COPY --chown", "RUN pip install --no-deps .")


@pytest.mark.parametrize(
    ("files", "start"),
    [
        (
            {"requirements.txt": "gunicorn\n", "app.py": "app = Flask(__name__)\n"},
            "gunicorn --bind 0.0.0.0:$PORT app:app",
        ),
        (
            {"requirements.txt": "uvicorn\n", "main.py": "app: FastAPI = FastAPI()\n"},
            "uvicorn main:app --host 0.0.0.0 --port $PORT",
        ),
        (
            {"requirements.txt": "gunicorn\n", "manage.py": "", "site/wsgi.py": ""},
            "gunicorn --bind 0.0.0.0:$PORT site.wsgi",
        ),
        ({"requirements.txt": "", "main.py": ""}, "python main.py"),
        ({"requirements.txt": "", "Procfile": "web: python -m srv\n"}, "python -m srv"),
    ],
)
def test_python_start_commands(files: dict[str, str], start: str) -> None:
    assert f'"sh", "-c", "{start}"' in made(files).dockerfile


def test_no_start_command_names_what_to_add() -> None:
    with pytest.raises(BuildFailed, match=r"no start command for this Python app: add a Procfile"):
        made({"requirements.txt": "", "lib.py": ""})
    with pytest.raises(BuildFailed, match=r'Node.js app.*"start" script'):
        made({"package.json": "{}"})


def test_versions_pick_an_official_style_tag_else_the_build_checks() -> None:
    assert pin("python:3.12-slim", "python", "3.11", ".python-version") == (
        "python:3.11-slim",
        None,
    )
    assert pin("mirror.example/library/node:20-slim", "node", "18", ".nvmrc") == (
        "mirror.example/library/node:18-slim",
        None,
    )
    assert pin("local/python:abc", "python", "3.11", "x") == ("local/python:abc", "3.11")
    assert pin("localhost:5000/python", "python", "3.11", "x") == ("localhost:5000/python", "3.11")
    checked = made(
        {"requirements.txt": "", "app.py": "", "runtime.txt": "python-3.10.4"},
        Images(python="local/py:1"),
    ).dockerfile
    assert "the app asks for 3.10 (runtime.txt)" in checked
    assert (
        "FROM python:3.10-slim"
        in made({"requirements.txt": "", "app.py": "", ".python-version": "3.10"}).dockerfile
    )


@pytest.mark.parametrize(
    ("lock", "install", "start"),
    [
        ("package-lock.json", "RUN npm ci", "npm start"),
        ("yarn.lock", "yarn install --frozen-lockfile", "yarn start"),
        ("pnpm-lock.yaml", "pnpm install --frozen-lockfile", "pnpm start"),
        (None, "RUN npm install", "npm start"),
    ],
)
def test_node_package_manager_follows_the_lock_file(
    lock: str | None, install: str, start: str
) -> None:
    files = {"package.json": '{"scripts": {"start": "node s.js"}, "devDependencies": {"x": "1"}}'}
    if lock:
        files[lock] = ""
    text = made(files).dockerfile
    assert before(text, install, "COPY --chown")
    assert f'"sh", "-c", "{start}"' in text
    assert "prune" in text or "--production" in text  # devDependencies go after the build


def test_node_versions_pin_exact_majors_not_ranges() -> None:
    engines = '{"engines": {"node": "%s"}, "main": "srv.js"}'
    assert "FROM node:18-slim" in made({"package.json": engines % "18.x", "srv.js": ""}).dockerfile
    assert "FROM node:20-slim" in made({"package.json": engines % ">=18", "srv.js": ""}).dockerfile
    assert (
        "FROM node:22-slim"
        in made({"package.json": "{}", ".nvmrc": "v22.1.0", "index.js": ""}).dockerfile
    )


def test_a_framework_site_is_built_in_node_and_served_by_the_static_image() -> None:
    r = made({"package.json": '{"scripts": {"build": "vite build"}}', "vite.config.js": ""})
    text = r.dockerfile
    assert text.startswith("FROM node:20-slim AS build\n")
    assert "COPY --from=build /app/dist/ /usr/share/nginx/html/" in text
    assert "rivetr-static.conf" in r.extra
    with pytest.raises(BuildFailed, match="no build script"):
        made({"package.json": "{}", "astro.config.mjs": ""})


def test_go_builds_a_static_binary_and_moves_the_image_up_never_down() -> None:
    text = made({"go.mod": "module a/b\n\ngo 1.19\n", "main.go": ""}).dockerfile
    assert text.startswith("FROM golang:1.22 AS build\n")
    assert "CGO_ENABLED=0" in text and "FROM debian:bookworm-slim\n" in text
    assert before(text, "RUN go mod download", "COPY . ./")
    newer = made({"go.mod": "module a\n\ngo 1.23\n", "cmd/srv/main.go": "", "go.sum": ""})
    assert newer.dockerfile.startswith("FROM golang:1.23 AS build\n")
    assert 'go build -ldflags="-s -w" -o /out/app ./cmd/srv' in newer.dockerfile
    assert "COPY go.mod go.sum ./" in newer.dockerfile


@pytest.mark.parametrize(
    ("files", "last_step"),
    [
        ({"go.mod": "module a\n", "main.go": ""}, "RUN go build"),
        ({"package.json": '{"scripts": {"build": "vite build"}}', "vite.config.js": ""}, "RUN npm"),
    ],
)
def test_a_build_stage_ends_with_the_deployments_labels_and_only_it(
    files: dict[str, str], last_step: str
) -> None:
    """The engine keeps a build stage's result as an untagged image: the labels say whose
    it is. One LABEL step, after every other step of the stage (they stay cached)."""
    text = made(files).dockerfile
    stage, final = text.split("\nFROM ", 1)
    assert text.count(STAGE_LABELS) == 1 and stage.endswith(STAGE_LABELS.rstrip("\n"))
    assert last_step in stage.splitlines()[-2]
    assert "LABEL" not in final


def test_single_stage_recipes_carry_no_labels() -> None:
    for files in ({"requirements.txt": "", "app.py": ""}, {"package.json": "{}", "index.js": ""}):
        assert "LABEL" not in made(files).dockerfile


@pytest.mark.parametrize("own", [None, b"node_modules\n"])
async def test_the_generated_dockerfile_is_left_out_of_the_copied_tree(
    tmp_path: Path, own: bytes | None
) -> None:
    """It names the deployment (the stage labels): in `COPY . ./` it would change that
    step, and every step after it, on every push. The engine leaves out what the context's
    .dockerignore names; the app's own one keeps its lines."""
    files = {"go.mod": b"module a\n", "main.go": b"package main\n"}
    if own is not None:
        files[".dockerignore"] = own
    source, target = tmp_path / "tree.tar", tmp_path / "context.tar"
    with tarfile.open(source, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    t = tree(**{name: data.decode() for name, data in files.items()})
    await buildpack.prepare(source, target, detect(t), Images(), [], OWNER)
    with tarfile.open(target) as archive:
        names = archive.getnames()
        handle = archive.extractfile(".dockerignore")
        assert handle is not None
        ignore = handle.read().decode().splitlines()
    assert names.count(".dockerignore") == 1 and DOCKERFILE in names
    assert ignore == (["node_modules"] if own else [".dockerignore"]) + [DOCKERFILE]
