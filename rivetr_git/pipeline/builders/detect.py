"""Which build type a pushed tree needs, and why: the documented detection order.

Pure logic on a Tree (the paths of the pushed commit and a few small files' contents), so
every rule is unit-tested on fixture trees. An explicit choice (the app's `build_type`
setting, else `[build] type` of the repo's rivetr.toml) always wins over detection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from rivetr_git import validate
from rivetr_git.errors import BuildFailed, ValidationError

# The build types of the seed. "auto" (or no setting) means: detect.
BUILDERS = ("buildpack", "nixpacks", "railpack", "pack")  # what language manifests build with
# What the built-in builder (buildpack) builds, each found by its manifests.
PYTHON_MANIFESTS = ("requirements.txt", "pyproject.toml", "Pipfile", "setup.py")

COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
# Files that mean "this is a program to build", not a site to serve as it is.
MANIFESTS = (
    "package.json",
    "requirements.txt",
    "pyproject.toml",
    "Pipfile",
    "setup.py",
    "go.mod",
    "Gemfile",
    "composer.json",
    "Cargo.toml",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "mix.exs",
    "deno.json",
    "Procfile",
)
# Static-export frameworks: a config file and the directory its build writes the site to.
FRAMEWORKS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Vite", ("vite.config.js", "vite.config.ts", "vite.config.mjs"), "dist"),
    ("Astro", ("astro.config.mjs", "astro.config.js", "astro.config.ts"), "dist"),
    ("Next.js (static export)", ("next.config.js", "next.config.mjs"), "out"),
    ("Gatsby", ("gatsby-config.js", "gatsby-config.ts"), "public"),
    ("SvelteKit", ("svelte.config.js",), "build"),
    ("Docusaurus", ("docusaurus.config.js", "docusaurus.config.ts"), "build"),
    ("Hugo", ("hugo.toml", "hugo.yaml", "hugo.json"), "public"),
    ("Jekyll", ("_config.yml",), "_site"),
    ("Eleventy", (".eleventy.js", "eleventy.config.js"), "_site"),
    ("MkDocs", ("mkdocs.yml",), "site"),
)
STATIC_DIRS = ("public", "dist", "build", "out", "_site", "site")


@dataclass(frozen=True)
class Tree:
    """The files of a pushed commit (paths relative to its root, '/'-separated)."""

    paths: frozenset[str]
    contents: Mapping[str, bytes] = field(default_factory=dict)  # a few small files

    def has(self, path: str) -> bool:
        return _norm(path) in self.paths

    def has_dir(self, path: str) -> bool:
        prefix = _norm(path).rstrip("/") + "/"
        return prefix == "./" or any(p.startswith(prefix) for p in self.paths)


@dataclass(frozen=True)
class Detection:
    build_type: str
    reason: str  # printed in the push output: why this build type
    dockerfile: str | None = None  # dockerfile: the file to build with
    publish_dir: str | None = None  # static: the directory to serve
    compose_file: str | None = None  # compose: the file to deploy
    language: str | None = None  # buildpack: python, node, go or static (a site with a build)

    @property
    def label(self) -> str:
        """How the push names it: the build type, and the language for buildpack."""
        return f"{self.build_type}/{self.language}" if self.language else self.build_type


def validate_build_type(value: str, source: str = "build_type") -> str:
    """'' or 'auto' (detect) or one of BUILD_TYPES; anything else is refused."""
    try:
        return validate.build_type(value)
    except ValueError as exc:
        raise ValidationError(f"{source}={value!r}: {exc}") from None


def choose(
    tree: Tree,
    app_setting: str | None,
    repo_setting: str | None = None,
    *,
    dockerfile: str = "Dockerfile",
    publish_dir: str | None = None,
    builder: str = "buildpack",
) -> Detection:
    """The build type for `tree`: the app's setting, else the repo's (rivetr.toml), else
    detected. `dockerfile` is the configured Dockerfile path, `publish_dir` the configured
    static directory, `builder` what language manifests build with. Raises BuildFailed when
    nothing fits, or an explicit type cannot build this tree."""
    for value, source in (
        (app_setting, "the app's build_type setting"),
        (repo_setting, "[build] type in rivetr.toml"),
    ):
        if value and value != "auto":
            validate_build_type(value, source)
            return _explicit(tree, value, source, dockerfile, publish_dir)
    return detect(tree, dockerfile=dockerfile, publish_dir=publish_dir, builder=builder)


def detect(
    tree: Tree,
    *,
    dockerfile: str = "Dockerfile",
    publish_dir: str | None = None,
    builder: str = "buildpack",
) -> Detection:
    """Apply the rules in their documented order; the first that matches wins."""
    found = _dockerfile(tree, dockerfile)
    if found:
        return Detection("dockerfile", f"found {found}", dockerfile=found)
    compose = _compose_file(tree)
    if compose:
        return Detection("compose", f"found {compose}", compose_file=compose)
    for name, build_type in (
        ("railpack.toml", "railpack"),
        ("railpack.json", "railpack"),
        ("project.toml", "pack"),
        ("nixpacks.toml", "nixpacks"),
        ("nixpacks.json", "nixpacks"),
    ):
        if tree.has(name):
            return Detection(build_type, f"found {name}")
    static = _static(tree, publish_dir)
    if static:
        return static
    manifests = [m for m in MANIFESTS if tree.has(m)]
    if manifests:
        if builder not in BUILDERS:
            raise BuildFailed(f"buildpack_builder = {builder!r}; use one of {', '.join(BUILDERS)}")
        if builder == "buildpack":
            return language(tree, publish_dir)
        return Detection(
            builder,
            f"found {', '.join(manifests)}; language projects build with "
            f"{builder} (the buildpack_builder setting)",
        )
    raise BuildFailed(
        "cannot tell how to build this commit: no Dockerfile or Containerfile, compose file, "
        "railpack.toml, project.toml, nixpacks.toml, index.html or language manifest "
        "(package.json, requirements.txt, go.mod, ...); add one, or set the app's build_type "
        "(`rivetr-git apps set APP build_type=TYPE`)"
    )


def _explicit(
    tree: Tree, build_type: str, source: str, dockerfile: str, publish_dir: str | None
) -> Detection:
    reason = f"set by {source}"
    if build_type == "dockerfile":
        found = _dockerfile(tree, dockerfile)
        if not found:
            raise BuildFailed(
                f"build_type is dockerfile ({reason}) but {dockerfile} is not in "
                "the pushed commit; add it or set the app's dockerfile path"
            )
        return Detection("dockerfile", f"{reason}; using {found}", dockerfile=found)
    if build_type == "compose":
        compose = _compose_file(tree)
        if not compose:
            raise BuildFailed(
                f"build_type is compose ({reason}) but the commit has none of "
                f"{', '.join(COMPOSE_FILES)}"
            )
        return Detection("compose", f"{reason}; using {compose}", compose_file=compose)
    if build_type == "static":
        # Never fall through to another build type: a static app serves files or fails.
        static = _static(tree, publish_dir, require_site=False)
        directory = static.publish_dir if static else (publish_dir or ".")
        if not tree.has(f"{directory}/index.html"):
            raise BuildFailed(
                f"build_type is static ({reason}) but {directory}/index.html is not in the "
                "pushed commit; commit the built site or set the app's publish_dir"
            )
        return Detection("static", f"{reason}; serving {directory}/", publish_dir=directory)
    if build_type == "buildpack":
        lang = language(tree, publish_dir)
        return Detection(
            "buildpack",
            f"{reason}; {lang.reason}",
            publish_dir=lang.publish_dir,
            language=lang.language,
        )
    return Detection(build_type, reason)


def language(tree: Tree, publish_dir: str | None = None) -> Detection:
    """What the built-in builder makes of a language project: Go, then Python, then Node
    (a static site when a framework, Create React App or the app's publish_dir says the
    build writes one). Raises BuildFailed for a language it does not build."""
    if tree.has("go.mod"):
        return Detection("buildpack", "found go.mod", language="go")
    python = [m for m in PYTHON_MANIFESTS if tree.has(m)]
    if python:
        return Detection("buildpack", f"found {', '.join(python)}", language="python")
    if tree.has("package.json"):
        site = _site_built_by(tree, publish_dir)
        if site is not None:
            directory, why = site
            return Detection(
                "buildpack",
                f"found package.json and {why}: builds it, serves {directory}/",
                publish_dir=directory,
                language="static",
            )
        return Detection("buildpack", "found package.json", language="node")
    found = [m for m in MANIFESTS if tree.has(m)]
    raise BuildFailed(
        f"the built-in builder builds Python, Node.js and Go projects; this commit has "
        f"{', '.join(found) or 'none of their manifests'}. Add a Dockerfile, or set "
        "buildpack_builder to nixpacks, railpack or pack (or the app's build_type)"
    )


def _site_built_by(tree: Tree, publish_dir: str | None) -> tuple[str, str] | None:
    """(directory, why) when a Node build writes a static site to serve."""
    if publish_dir:
        return _norm(publish_dir), "the app's publish_dir"
    for framework, configs, directory in FRAMEWORKS:
        config = next((c for c in configs if tree.has(c)), None)
        if config is not None:
            return directory, f"{config} ({framework})"
    if b'"react-scripts"' in tree.contents.get("package.json", b""):
        return "build", "react-scripts (Create React App)"
    return None


def _dockerfile(tree: Tree, configured: str) -> str | None:
    """The configured Dockerfile path; with the default one, also a root Containerfile."""
    if tree.has(configured):
        return _norm(configured)
    if configured == "Dockerfile" and tree.has("Containerfile"):
        return "Containerfile"
    return None


def _compose_file(tree: Tree) -> str | None:
    return next((name for name in COMPOSE_FILES if tree.has(name)), None)


def _static(tree: Tree, publish_dir: str | None, require_site: bool = True) -> Detection | None:
    """A site to serve as it is: a configured publish dir, a static-export framework whose
    output is committed, or index.html with no server-side project files."""
    if publish_dir:
        if tree.has(f"{publish_dir}/index.html") or not require_site:
            return Detection(
                "static",
                f"{publish_dir}/index.html (the app's publish_dir)",
                publish_dir=_norm(publish_dir),
            )
        return None
    for framework, configs, directory in FRAMEWORKS:
        config = next((c for c in configs if tree.has(c)), None)
        if config is None:
            continue
        if tree.has(f"{directory}/index.html"):
            return Detection(
                "static",
                f"found {config} ({framework}) and its built site in {directory}/",
                publish_dir=directory,
            )
        if not require_site:
            return Detection("static", f"{framework} site", publish_dir=directory)
        # Its output is not committed: a builder must build it (the manifest rule).
    if b'"react-scripts"' in tree.contents.get("package.json", b"") and (
        tree.has("build/index.html") or not require_site
    ):
        return Detection(
            "static",
            "package.json uses react-scripts (Create React App)"
            + (" and its built site is in build/" if require_site else ""),
            publish_dir="build",
        )
    if any(tree.has(m) for m in MANIFESTS):
        return None
    if tree.has("index.html"):
        return Detection(
            "static", "found index.html and no server-side project files", publish_dir="."
        )
    for directory in STATIC_DIRS:
        if tree.has(f"{directory}/index.html"):
            return Detection(
                "static",
                f"found {directory}/index.html and no server-side project files",
                publish_dir=directory,
            )
    return None


def _norm(path: str) -> str:
    return str(PurePosixPath(path))
