"""The module graph flows one way (ARCHITECTURE.md §2.1), read from the source with `ast`."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "rivetr_git"
ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / PACKAGE


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. rivetr_git.proxy.server
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def relpath(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _load_modules() -> list[Module]:
    modules = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        modules.append(Module(_module_name(path), path, tree))
    return modules


MODULES = _load_modules()
BY_NAME = {m.name: m for m in MODULES}


def imports_of(module: Module) -> set[str]:
    """Every module `module` imports, anywhere in its body (also inside functions and
    `if TYPE_CHECKING:`), as absolute dotted names. `from a import b` yields `a` and `a.b`."""
    found: set[str] = set()
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                source = f"{base}.{node.module}" if node.module else base
            else:
                assert node.module is not None
                source = node.module
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _imports_of_package(name: str) -> dict[str, set[str]]:
    return {m.name: imports_of(m) for m in MODULES if _within(m.name, name)}


def _violations(importer: str, forbidden: list[str]) -> list[str]:
    bad = []
    for module, imported in _imports_of_package(importer).items():
        for target in sorted(imported):
            if any(_within(target, f) for f in forbidden):
                bad.append(f"{module} imports {target}")
    return bad


# --- the walker itself ------------------------------------------------------------------------


def test_walker_sees_the_whole_package() -> None:
    names = set(BY_NAME)
    for expected in (
        "rivetr_git",
        "rivetr_git.daemon",
        "rivetr_git.proxy.server",
        "rivetr_git.proxy.routes",
        "rivetr_git.runtime.docker",
        "rivetr_git.receiver.server",
        "rivetr_git.store.database",
        "rivetr_git.store.repos",
    ):
        assert expected in names
    # Positive controls: known edges are found, so an empty result below means something.
    assert "rivetr_git.runtime.docker" in imports_of(BY_NAME["rivetr_git.daemon"])
    assert "rivetr_git.proxy.routes" in imports_of(BY_NAME["rivetr_git.proxy.server"])
    assert "docker" in imports_of(BY_NAME["rivetr_git.runtime.docker"])
    assert "docker.errors" in imports_of(BY_NAME["rivetr_git.runtime.docker_build"])
    assert "pygit2" in imports_of(BY_NAME["rivetr_git.store.repos"])


def test_walker_resolves_relative_and_nested_imports() -> None:
    tree = ast.parse(
        "from . import routes\n"
        "from .. import store\n"
        "from ..runtime.base import Runtime\n"
        "def f():\n"
        "    import docker.errors\n"
        "    from rivetr_git.daemon import Daemon\n"
    )
    fake = Module("rivetr_git.proxy.server", PACKAGE_DIR / "proxy" / "server.py", tree)
    found = imports_of(fake)
    assert "rivetr_git.proxy.routes" in found
    assert "rivetr_git.store" in found
    assert "rivetr_git.runtime.base" in found
    assert "docker.errors" in found
    assert "rivetr_git.daemon" in found
    pkg = Module(
        "rivetr_git.proxy",
        PACKAGE_DIR / "proxy" / "__init__.py",
        ast.parse("from .routes import RouteTable\n"),
    )
    assert "rivetr_git.proxy.routes" in imports_of(pkg)


# --- the one-way flow -------------------------------------------------------------------------

# Every module belongs to one unit: a package below rivetr_git, or a top-level module. Each
# unit may import only the units listed here (and itself); a module of no listed unit fails,
# so a new module or package has to take its place in the layers. Arrows point down: edges
# (cli, receiver) -> admin -> pipeline -> runtime, proxy -> store, secrets -> the vocabulary
# (settings, validate, names, models, errors).
VOCABULARY = {"errors", "models", "names", "validate", "settings", "terminal"}
# The composition root and its part builders may reach every unit below the edges.
_ROOT = {
    "api",
    "admin",
    "certificates",
    "pipeline",
    "runtime",
    "proxy",
    "receiver",
    "store",
    "secrets",
    "notify",
    "services",
    *VOCABULARY,
}
ALLOWED: dict[str, set[str]] = {
    "daemon": {"wiring", *_ROOT},
    "wiring": _ROOT,  # the daemon's helpers: each builds one part of the server
    "cli": {"daemon", "admin", "store", "secrets", "receiver", *VOCABULARY},
    "receiver": {"admin", "pipeline", "store", *VOCABULARY},
    # The HTTP edge (webhooks, /api/v1/, /metrics), beside the SSH one.
    "api": {"admin", "pipeline", "store", *VOCABULARY},
    "admin": {
        "pipeline",
        "services",
        "certificates",
        "proxy",
        "store",
        "secrets",
        "notify",
        *VOCABULARY,
    },
    "certificates": {"proxy", "store", "secrets", "notify", *VOCABULARY},
    "pipeline": {"runtime", "proxy", "store", "secrets", "notify", *VOCABULARY},
    # Backing services: containers next to the apps, at the pipeline's level.
    "services": {"runtime", "store", "secrets", *VOCABULARY},
    "notify": {"models", "settings", "errors"},
    "runtime": {"errors", "validate"},
    "proxy": {"errors", "validate"},
    "secrets": {"store", "errors", "models"},
    "store": {"errors", "models", "names"},
    "settings": {"errors", "validate"},
    "validate": {"errors", "names"},
    "names": {"errors"},
    "terminal": set(),
    "models": set(),
    "errors": set(),
}


def unit_of(name: str) -> str | None:
    """'rivetr_git.proxy.server' -> 'proxy'; 'rivetr_git.daemon' -> 'daemon'; the package
    itself (its __init__, the version) -> None."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_violations(modules: list[Module]) -> list[str]:
    bad = []
    for module in modules:
        unit = unit_of(module.name)
        if unit is None:
            continue
        if unit not in ALLOWED:
            bad.append(f"{module.name}: {unit} has no place in ALLOWED")
            continue
        for target in sorted(imports_of(module)):
            # `from rivetr_git.x import name` also yields rivetr_git.x.name: judge the module.
            while target not in BY_NAME and "." in target:
                target = target.rpartition(".")[0]
            other = unit_of(target) if _within(target, PACKAGE) else None
            if other is not None and other != unit and other not in ALLOWED[unit]:
                bad.append(f"{module.name} imports {target}")
    return bad


def test_every_module_imports_only_the_layers_below_it() -> None:
    assert layer_violations(MODULES) == []


def test_a_planted_bad_import_is_caught() -> None:
    # Positive controls: the runtime reaching up into the pipeline, and a new top-level module
    # that nobody placed.
    tree = ast.parse("from rivetr_git.pipeline.labels import labels\n")
    upward = Module("rivetr_git.runtime.docker", PACKAGE_DIR / "runtime" / "docker.py", tree)
    stray = Module("rivetr_git.utils", PACKAGE_DIR / "utils.py", ast.parse(""))
    found = layer_violations([upward, stray])
    assert "rivetr_git.runtime.docker imports rivetr_git.pipeline.labels" in found
    assert "rivetr_git.utils: utils has no place in ALLOWED" in found


def test_the_top_level_holds_few_modules() -> None:
    top = sorted(m.name for m in MODULES if m.name.count(".") == 1 and not m.is_package)
    assert len(top) <= 8, top


def test_only_the_cli_imports_the_composition_root() -> None:
    bad = [
        f"{m.name} imports {target}"
        for m in MODULES
        for target in imports_of(m)
        if _within(target, "rivetr_git.daemon") and m.name not in ("rivetr_git.cli.main",)
    ]
    assert bad == []


@pytest.mark.parametrize(
    ("module", "importers"),
    [
        # The Podman runtime is the Docker runtime over Podman's Docker-compatible API.
        ("rivetr_git.runtime.docker", ["rivetr_git.daemon", "rivetr_git.runtime.podman"]),
        ("rivetr_git.runtime.docker_build", ["rivetr_git.runtime.docker"]),
        # The CLI imports it only in client mode, so local commands never load paramiko.
        ("rivetr_git.cli.client", ["rivetr_git.cli.main"]),
    ],
)
def test_wrappers_have_one_importer(module: str, importers: list[str]) -> None:
    found = sorted(
        m.name
        for m in MODULES
        if m.name != module and any(_within(t, module) for t in imports_of(m))
    )
    assert found == importers


def _allowed(relpath: str, allowed: str) -> bool:
    """`allowed` is a folder (ending in /) or a file path, in which * stands for any part
    of one name."""
    if allowed.endswith("/"):
        return relpath.startswith(allowed)
    return re.fullmatch(re.escape(allowed).replace(r"\*", "[^/]*"), relpath) is not None


def test_allowed_paths_match_strictly() -> None:
    assert _allowed("rivetr_git/runtime/docker.py", "rivetr_git/runtime/docker*.py")
    assert _allowed("rivetr_git/runtime/docker_build.py", "rivetr_git/runtime/docker*.py")
    assert not _allowed("rivetr_git/runtime/base.py", "rivetr_git/runtime/docker*.py")
    assert not _allowed("rivetr_git/runtime/docker/build.py", "rivetr_git/runtime/docker*.py")
    assert not _allowed("rivetr_git/runtime/dockerXpy", "rivetr_git/runtime/docker*.py")
    assert _allowed("rivetr_git/receiver/server.py", "rivetr_git/receiver/")
    assert not _allowed("rivetr_git/store/repos.py.bak", "rivetr_git/store/repos.py")


@pytest.mark.parametrize(
    ("library", "allowed"),
    [
        ("docker", ["rivetr_git/runtime/docker*.py"]),
        ("pygit2", ["rivetr_git/store/repos.py"]),
        ("asyncssh", ["rivetr_git/receiver/", "rivetr_git/admin/ssh_keys.py"]),
        # certbot's ACME library (blocking, on requests): one module, run in a thread.
        ("acme", ["rivetr_git/certificates/acme_client.py"]),
        ("paramiko", ["rivetr_git/cli/client.py"]),
    ],
)
def test_blocking_and_heavy_libraries_stay_in_their_wrappers(
    library: str, allowed: list[str]
) -> None:
    bad = []
    for module in MODULES:
        if any(_allowed(module.relpath, a) for a in allowed):
            continue
        for target in imports_of(module):
            # Only absolute third-party names count: rivetr_git.runtime.docker is not docker-py.
            if _within(target, library):
                bad.append(f"{module.relpath} imports {target}")
    assert bad == []


def test_every_module_starts_with_a_docstring() -> None:
    missing = [
        m.relpath
        for m in MODULES
        if not (
            m.tree.body
            and isinstance(m.tree.body[0], ast.Expr)
            and isinstance(m.tree.body[0].value, ast.Constant)
            and isinstance(m.tree.body[0].value.value, str)
            and m.tree.body[0].value.value.strip()
        )
    ]
    assert missing == []


# --- no cycles ----------------------------------------------------------------------------------


def import_graph(modules: list[Module]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (itself excluded)."""
    names = {m.name for m in modules}
    return {m.name: {t for t in imports_of(m) if t in names and t != m.name} for m in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = import_graph(MODULES)
    # Positive control: the store importing the pipeline, which imports the store.
    store = "rivetr_git.store.database"
    planted = {**graph, store: {*graph[store], "rivetr_git.pipeline.deployer"}}
    assert any(store in group for group in cycles(planted))
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_module_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph(MODULES)) == []


# --- sizes -------------------------------------------------------------------------------------

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def oversized(modules: list[Module]) -> list[str]:
    """Modules over MAX_MODULE_LINES and functions over MAX_FUNCTION_LINES (as formatted)."""
    found = []
    for module in modules:
        lines = len(module.path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{module.relpath}: {lines} lines")
        for node in ast.walk(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{module.relpath}:{node.name}: {length} lines")
    return found


def test_no_module_over_450_lines_and_no_function_over_60() -> None:
    assert oversized(MODULES) == []


def test_the_size_check_sees_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    tree = ast.parse(f"def long():\n{body}\n")
    path = PACKAGE_DIR / "__init__.py"  # a short real file: only the function is too long
    assert oversized([Module("rivetr_git.daemon", path, tree)]) == [
        "rivetr_git/__init__.py:long: 61 lines"
    ]
