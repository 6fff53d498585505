"""The built-in builder's Node.js recipes: an app run from `node_image`, or a static site
built in `node_image` and served by the static builder's nginx image.

The package manager follows the lock file (pnpm-lock.yaml: pnpm, yarn.lock: yarn, else
npm; `npm ci` with package-lock.json), and the install runs on package.json and the lock
file alone, before the source is copied: a push that changes only code reuses it. The
`build` script runs when there is one; development dependencies are pruned after it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders import recipe, static_site
from rivetr_git.pipeline.builders.detect import Tree
from rivetr_git.pipeline.builders.recipe import Images, Recipe

# NODE_ENV=production from the start (one ENV step: each step costs a container); the
# install asks for devDependencies explicitly, since the build usually needs them.
_ENV = (
    "ENV NODE_ENV=production NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false \\\n"
    "    NPM_CONFIG_AUDIT=false HOME=/app\n"
)
_CONFIG_FILES = (".npmrc", ".yarnrc", ".yarnrc.yml")
_ENTRY_FILES = ("server.js", "index.js", "app.js", "main.js")
_EXACT_MAJOR = re.compile(r"^\s*[v^~=]?\s*(\d+)(?:\.(?:\d+|x|\*))*\s*$")
_CONF = "rivetr-static.conf"


@dataclass(frozen=True)
class _Manager:
    name: str
    lock: str | None
    install: str
    prune: str  # drops devDependencies after the build

    def run(self, script: str) -> str:
        return f"{self.name} run {script}"


def _manager(tree: Tree) -> _Manager:
    if tree.has("pnpm-lock.yaml"):
        return _Manager(
            "pnpm",
            "pnpm-lock.yaml",
            "corepack enable && pnpm install --frozen-lockfile --prod=false",
            "pnpm prune --prod",
        )
    if tree.has("yarn.lock"):
        berry = tree.has(".yarnrc.yml")
        return _Manager(
            "yarn",
            "yarn.lock",
            "corepack enable && yarn install "
            + ("--immutable" if berry else "--frozen-lockfile --production=false"),
            "yarn workspaces focus --all --production"
            if berry
            else "yarn install --production --frozen-lockfile --ignore-scripts --prefer-offline",
        )
    lock = next((f for f in ("package-lock.json", "npm-shrinkwrap.json") if tree.has(f)), None)
    return _Manager(
        "npm",
        lock,
        "npm ci --include=dev" if lock else "npm install --include=dev",
        "npm prune --omit=dev",
    )


def plan(tree: Tree, images: Images, arg_names: Sequence[str]) -> Recipe:
    """An app: installed, built when it has a build script, started by its start command."""
    package = _package(tree)
    manager = _manager(tree)
    head, notes = _build_stage(tree, images, arg_names, package, manager, stage="")
    start, why = _start(tree, package, manager)
    prune = f"RUN {manager.prune}\n" if package.get("devDependencies") else ""
    text = head + prune + recipe.run_as_app() + recipe.cmd(start)
    return Recipe(text, (*notes, f"start: {start} ({why})"))


def plan_site(
    tree: Tree,
    images: Images,
    arg_names: Sequence[str],
    directory: str,
    stage_labels: Mapping[str, str],
) -> Recipe:
    """A static site: built in node_image, its output served by static_server_image (the
    build stage labelled with `stage_labels`: recipe.stage_end)."""
    package = _package(tree)
    manager = _manager(tree)
    if "build" not in _scripts(package):
        raise BuildFailed(
            f"this static site is built from package.json, which has no build script; add one "
            f'("scripts": {{"build": "..."}}) that writes {directory}/, or commit {directory}/'
        )
    head, notes = _build_stage(tree, images, arg_names, package, manager, stage=" AS build")
    text = (
        head
        + recipe.stage_end(stage_labels)
        + f"FROM {images.static_server}\n"
        + f"COPY {_CONF} /etc/nginx/conf.d/default.conf\n"
        + f"COPY --from=build /app/{directory}/ /usr/share/nginx/html/\n"
        + f"EXPOSE {static_site.PORT}\n"
    )
    notes = (*notes, f"serving {directory}/ with {images.static_server}")
    return Recipe(text, notes, {_CONF: static_site.server_config().encode()})


def _build_stage(
    tree: Tree,
    images: Images,
    arg_names: Sequence[str],
    package: dict[str, Any],
    manager: _Manager,
    stage: str,
) -> tuple[str, tuple[str, ...]]:
    version, source = _requested(tree, package)
    image, check = recipe.pin(images.node, "node", version, source)
    manifests = [
        "package.json",
        *([manager.lock] if manager.lock else []),
        *(f for f in _CONFIG_FILES if tree.has(f)),
    ]
    build = "build" in _scripts(package)
    text = (
        f"FROM {image}{stage}\n"
        + _ENV
        + (_check(check, source) if check else "")
        + recipe.add_user()
        + "WORKDIR /app\n"
        + recipe.build_args(arg_names)
        + recipe.copy_files(manifests)
        + f"RUN {manager.install}\n"
        + f"COPY --chown={recipe.UID}:{recipe.UID} . ./\n"
        + (f"RUN {manager.run('build')}\n" if build else "")
    )
    notes = (
        f"node image: {image}"
        + (f" (Node.js {version} from {source})" if version and not check else ""),
        f"dependencies: {manager.install}" + (f"; build: {manager.run('build')}" if build else ""),
    )
    return text, notes


def _package(tree: Tree) -> dict[str, Any]:
    try:
        package = json.loads(recipe.contents(tree, "package.json") or "{}")
    except json.JSONDecodeError as exc:
        raise BuildFailed(f"package.json is not valid JSON: {exc}") from None
    if not isinstance(package, dict):
        raise BuildFailed("package.json must hold a JSON object")
    return package


def _scripts(package: dict[str, Any]) -> dict[str, Any]:
    scripts = package.get("scripts")
    return scripts if isinstance(scripts, dict) else {}


def _requested(tree: Tree, package: dict[str, Any]) -> tuple[str | None, str]:
    """The major version the app asks for: engines.node, else .nvmrc. A range (>=18,
    18 || 20) pins nothing: the configured image is used."""
    engines = package.get("engines")
    wanted = engines.get("node") if isinstance(engines, dict) else None
    source = "engines.node"
    if not isinstance(wanted, str):
        wanted, source = recipe.contents(tree, ".nvmrc").strip() or None, ".nvmrc"
    match = _EXACT_MAJOR.match(wanted) if wanted else None
    return (match[1], source) if match else (None, "")


def _check(major: str, source: str) -> str:
    message = (
        f"this image has Node.js ' + v + ' but the app asks for {major} ({source}); set "
        f"node_image to an image with Node.js {major}, or change {source}"
    )
    code = (
        "const v = process.versions.node.split('.')[0]; "
        f"if (v !== '{major}') {{ console.error('{message}'); process.exit(1); }}"
    )
    return f'RUN node -e "{code}"\n'


def _start(tree: Tree, package: dict[str, Any], manager: _Manager) -> tuple[str, str]:
    web = recipe.web_command(tree)
    if web:
        return web, "the Procfile's web line"
    if "start" in _scripts(package):
        return f"{manager.name} start", 'the "start" script of package.json'
    main = package.get("main")
    candidates = ([main] if isinstance(main, str) else []) + list(_ENTRY_FILES)
    for name in candidates:
        if tree.has(name.removeprefix("./")):
            return f"node {name.removeprefix('./')}", f"found {name}"
    raise recipe.no_start("Node.js", "web: node server.js")
