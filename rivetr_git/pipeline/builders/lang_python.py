"""The built-in builder's Python recipe: a virtualenv in `python_image`, dependencies
installed from the manifests (and lock files) before the source is copied, so a push that
changes only code reuses that layer; the start command from the Procfile or the project.

- requirements.txt: `pip install -r`; files it names (`-r`, `-c`, `--find-links DIR`, local
  wheels or archives) are copied with it, so vendored packages install without an index.
- pyproject.toml: with uv.lock `uv sync --frozen`, with poetry.lock `poetry install`
  (both tools are installed with pip first), else its [project] dependencies with pip, and
  the project itself (`pip install --no-deps .`) when it declares a build system.
- Pipfile: `pipenv requirements` (Pipfile.lock, locked first when missing) into pip.
- setup.py alone: `pip install .` with the source.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders import recipe
from rivetr_git.pipeline.builders.detect import Tree
from rivetr_git.pipeline.builders.recipe import Images, Recipe

_ENV = (
    "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\\n"
    "    PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore VIRTUAL_ENV=/opt/venv \\\n"
    "    UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH HOME=/app\n"
)
_GENERATED_REQUIREMENTS = ".rivetr.requirements.txt"
# Requirement-file options that name another file or a directory of packages.
_REFERENCE = re.compile(r"^(?:-r|--requirement|-c|--constraint|-f|--find-links)[\s=]+(\S+)")
_ARCHIVE = (".whl", ".tar.gz", ".zip", ".tar.bz2")
_APP_OBJECT = re.compile(r"^(app|application)\s*(?::[^=]*)?=", re.MULTILINE)
_ENTRY_FILES = ("app.py", "main.py", "wsgi.py", "asgi.py", "server.py")


def plan(tree: Tree, images: Images, arg_names: Sequence[str]) -> Recipe:
    version, source = _requested(tree)
    image, check = recipe.pin(images.python, "python", version, source)
    manifests, install, after, how = _install(tree)
    start, why = _start(tree)
    extra = {}
    if _GENERATED_REQUIREMENTS in manifests:
        extra[_GENERATED_REQUIREMENTS] = _project_requirements(tree).encode()
    text = (
        f"FROM {image}\n"
        + _ENV
        + (_check(check, source) if check else "")
        + recipe.add_user().rstrip("\n")
        + " && python3 -m venv /opt/venv\n"
        + "WORKDIR /app\n"
        + recipe.build_args(arg_names)
        + "".join(f"COPY {m} {m}\n" for m in manifests)
        + (f"RUN {install}\n" if install else "")
        + f"COPY --chown={recipe.UID}:{recipe.UID} . ./\n"
        + (f"RUN {after}\n" if after else "")
        + recipe.run_as_app()
        + recipe.cmd(start)
    )
    notes = (
        f"python image: {image}"
        + (f" (Python {version} from {source})" if version and not check else ""),
        f"dependencies: {how}",
        f"start: {start} ({why})",
    )
    return Recipe(text, notes, extra)


def _requested(tree: Tree) -> tuple[str | None, str]:
    for name in (".python-version", "runtime.txt"):
        text = recipe.contents(tree, name).strip()
        if text:
            version = recipe.major_minor(text)
            if version is None:
                raise BuildFailed(f"{name} says {text!r}; write a version such as 3.12")
            return version, name
    return None, ""


def _check(version: str, source: str) -> str:
    """A step that fails, naming both versions, when the image's Python is another one."""
    message = (
        f"this image has Python %s but the app asks for {version} ({source}); set python_image "
        f"to an image with Python {version}, or change {source}"
    )
    code = (
        "import sys; v = '%d.%d' % sys.version_info[:2]; "
        f"sys.exit(0 if v == '{version}' else '{message}' % v)"
    )
    return f'RUN python3 -c "{code}"\n'


def _install(tree: Tree) -> tuple[list[str], str, str, str]:
    """(files to copy before installing, the install command, what runs after the source is
    copied, how it installs) for the project's manifests."""
    if tree.has("requirements.txt"):
        files, needs_source = _requirement_files(tree)
        command = "pip install -r requirements.txt"
        if needs_source:  # it installs the project itself: nothing to cache apart
            return [], "", command, "pip install -r requirements.txt (with the source)"
        return files, command, "", "pip install -r requirements.txt"
    if tree.has("pyproject.toml"):
        return _pyproject(tree)
    if tree.has("Pipfile"):
        lock = tree.has("Pipfile.lock")
        return (
            ["Pipfile", *(["Pipfile.lock"] if lock else [])],
            "pip install pipenv && "
            + ("" if lock else "pipenv lock && ")
            + "pipenv requirements > /tmp/requirements.txt && pip install -r /tmp/requirements.txt",
            "",
            "pipenv (Pipfile.lock)" if lock else "pipenv (Pipfile, locked now: no Pipfile.lock)",
        )
    return [], "", "pip install .", "pip install . (setup.py)"


def _requirement_files(tree: Tree) -> tuple[list[str], bool]:
    """requirements.txt and the files or directories it names; True when it installs a local
    project (`.`, `-e .`), which needs the whole source."""
    files = ["requirements.txt"]
    for raw in recipe.contents(tree, "requirements.txt").splitlines():
        line = raw.split(" #")[0].strip()
        if line.startswith("-e ") or line.startswith("--editable") or line in (".", "./"):
            return files, True
        match = _REFERENCE.match(line)
        path = match[1] if match else line
        if "://" in path or path.startswith(("/", "..")):
            continue
        path = path.removeprefix("./").rstrip("/")
        if not path or path == ".":
            return files, True
        if (match or path.endswith(_ARCHIVE)) and (tree.has(path) or tree.has_dir(path)):
            files.append(path)
    return files, False


def _pyproject(tree: Tree) -> tuple[list[str], str, str, str]:
    data = _toml(tree)
    packaged = "build-system" in data
    if tree.has("uv.lock"):
        return (
            ["pyproject.toml", "uv.lock"],
            "pip install uv && uv sync --frozen --no-dev --no-install-project",
            "uv sync --frozen --no-dev",
            "uv sync --frozen (uv.lock)",
        )
    tool = data.get("tool")
    if tree.has("poetry.lock") or (isinstance(tool, dict) and "poetry" in tool):
        lock = tree.has("poetry.lock")
        return (
            ["pyproject.toml", *(["poetry.lock"] if lock else [])],
            "pip install poetry && poetry install --only main --no-root --no-interaction",
            "",
            "poetry install (poetry.lock)" if lock else "poetry install (no poetry.lock)",
        )
    return (
        [_GENERATED_REQUIREMENTS],
        f"pip install -r {_GENERATED_REQUIREMENTS}",
        "pip install --no-deps ." if packaged else "",
        "pip: pyproject.toml's [project] dependencies"
        + (", then the project itself" if packaged else ""),
    )


def _project_requirements(tree: Tree) -> str:
    project = _toml(tree).get("project")
    dependencies = project.get("dependencies", []) if isinstance(project, dict) else []
    return "".join(f"{d}\n" for d in dependencies if isinstance(d, str))


def _toml(tree: Tree) -> dict[str, object]:
    try:
        return tomllib.loads(recipe.contents(tree, "pyproject.toml"))
    except tomllib.TOMLDecodeError as exc:
        raise BuildFailed(f"pyproject.toml is not valid TOML: {exc}") from None


def _start(tree: Tree) -> tuple[str, str]:
    """The web command: the Procfile's, else a gunicorn or uvicorn app, else app.py/main.py."""
    web = recipe.web_command(tree)
    if web:
        return web, "the Procfile's web line"
    deps = " ".join(
        recipe.contents(tree, m).lower() for m in ("requirements.txt", "pyproject.toml", "Pipfile")
    )
    target = _app_object(tree)
    if target and "uvicorn" in deps:
        return f"uvicorn {target} --host 0.0.0.0 --port $PORT", f"uvicorn and {target}"
    if target and "gunicorn" in deps:
        return f"gunicorn --bind 0.0.0.0:$PORT {target}", f"gunicorn and {target}"
    for name in ("app.py", "main.py"):
        if tree.has(name):
            return f"python {name}", f"found {name}"
    raise recipe.no_start("Python", "web: gunicorn app:app")


def _app_object(tree: Tree) -> str | None:
    """MODULE:NAME of an app object in a root module, or a Django project's wsgi module."""
    for name in _ENTRY_FILES:
        match = _APP_OBJECT.search(recipe.contents(tree, name))
        if match:
            return f"{name.removesuffix('.py')}:{match[1]}"
    if tree.has("manage.py"):
        for path in sorted(tree.paths):
            parts = path.split("/")
            if len(parts) == 2 and parts[1] == "wsgi.py":
                return f"{parts[0]}.wsgi"
    return None
