"""A pushed compose file normalised: anchors, extends and interpolation resolved, every path
it names kept inside the pushed tree.

Normalising is done here in Python (yaml.safe_load resolves anchors and merge keys; `extends`
and `${VAR}` interpolation are resolved below) rather than by `docker-compose config`: no tool
reads an untrusted file before it is checked, and interpolation cannot reach the server's
environment because it only ever sees the pushed tree's own `.env`. `include` is refused:
docker-compose 1.29 (the one installed here) does not know it.

Every path a file names (build context, Dockerfile, env_file, extends.file) must stay inside
the pushed tree after symlinks are followed. What the normalised file may say is
compose_policy's to check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rivetr_git.errors import BuildFailed

HOST = "compose apps run without host access"
_VAR = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", re.S)


def inside(root: Path, base: Path, path: Any, what: str) -> Path:
    """`path` (relative to `base`) resolved, if it stays inside `root`. Raises BuildFailed."""
    if not isinstance(path, str) or not path:
        raise BuildFailed(f"{what} must be a relative path inside the pushed tree")
    if (
        path.startswith(("/", "~", "\\"))
        or "://" in path
        or path.startswith("git@")
        or re.match(r"[A-Za-z]:", path)
    ):
        raise BuildFailed(
            f"{what} {path!r} is outside the pushed tree; {HOST}: name a path "
            "relative to the compose file, inside the repository"
        )
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise BuildFailed(
            f"{what} {path!r} leads outside the pushed tree (through '..' or a "
            f"symlink); {HOST}: name a path inside the repository"
        )
    return resolved


def dotenv(root: Path) -> dict[str, str]:
    """The pushed tree's `.env` (NAME=VALUE lines): the only variables a file may use."""
    path = root / ".env"
    if not path.is_file():
        return {}
    inside(root, root, ".env", ".env")
    found: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            found[name.strip()] = value
    return found


def interpolate(value: Any, variables: Mapping[str, str], name: str) -> Any:
    """Compose's `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
    `${VAR?error}` and `$$`, over every string value, from `variables` only."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables, name) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables, name) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        if match.group(3):
            return variables.get(match.group(3), "")
        braced = _BRACED.fullmatch(match.group(2))
        if braced is None:
            raise BuildFailed(
                f"{name}: invalid interpolation {match.group(0)!r}; write "
                "${NAME}, ${NAME:-default} or $$ for a literal $"
            )
        var, op, arg = braced.groups()
        present = var in variables and (variables[var] != "" or op is None or ":" not in op)
        if present:
            return variables[var]
        if op in (":?", "?"):
            raise BuildFailed(
                f"{name}: variable {var} is required: {arg or 'not set'} (only "
                "the pushed .env is read; the server's environment is not)"
            )
        return (arg or "") if op else ""

    return _VAR.sub(one, value)


MAX_NODES = 100_000  # far beyond any real compose file; anchors can expand exponentially


def _within_budget(data: Any, file: str) -> None:
    """Refuse a file whose anchors expand past MAX_NODES (a "billion laughs"): everything
    after this copies the expanded tree. Stops counting at the budget."""
    seen, stack = 0, [data]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise BuildFailed(
                f"{file} expands to more than {MAX_NODES} values (through YAML "
                "anchors?); write it out plainly"
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load(root: Path, base: Path, file: str, variables: Mapping[str, str]) -> dict[str, Any]:
    """One compose file of the tree, parsed and interpolated. Raises BuildFailed."""
    path = inside(root, base, file, "compose file")
    if not path.is_file():
        raise BuildFailed(f"compose file {file} is not in the pushed tree")
    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        raise BuildFailed(f"{file} is not valid YAML: {exc}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("services"), dict)
        or not data["services"]
    ):
        raise BuildFailed(f"{file} defines no services")
    _within_budget(data, file)
    if "include" in data:
        raise BuildFailed(
            f'{file}: "include" is not supported here (docker-compose 1.29); '
            "put the services in this file, or use extends: with a file inside "
            "the repository"
        )
    result: dict[str, Any] = interpolate(data, variables, file)
    return result


def as_dict(value: Any) -> dict[str, Any]:
    """Compose's list form (KEY=VALUE; a bare KEY is null) or mapping form, as a mapping."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return {k: (v if sep else None) for k, sep, v in (str(i).partition("=") for i in value)}
    return {}


def _merge(base: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of an extended service: mappings merged, sequences added."""
    merged = dict(base)
    for key, value in local.items():
        old = merged.get(key)
        if key in ("environment", "labels", "extra_hosts") and old is not None:
            merged[key] = {**as_dict(old), **as_dict(value)}
        elif key == "build" and isinstance(old, dict) and isinstance(value, dict):
            merged[key] = {**old, **value}
        elif (
            key in ("volumes", "expose", "tmpfs", "dns", "cap_drop")
            and isinstance(old, list)
            and isinstance(value, list)
        ):
            merged[key] = old + [v for v in value if v not in old]
        else:
            merged[key] = value
    return merged


def _rebase(spec: dict[str, Any], root: Path, base: Path) -> dict[str, Any]:
    """A service from a file in another directory, with its paths relative to `root`."""
    if base == root:
        return spec
    spec = dict(spec)
    build = spec.get("build")
    if isinstance(build, str | dict):
        build = {"context": build} if isinstance(build, str) else dict(build)
        context = inside(root, base, build.get("context", "."), "build context")
        build["context"] = str(context.relative_to(root.resolve())) or "."
        spec["build"] = build
    if isinstance(spec.get("env_file"), str | list):
        files = [spec["env_file"]] if isinstance(spec["env_file"], str) else spec["env_file"]
        spec["env_file"] = [
            str(inside(root, base, f, "env_file").relative_to(root.resolve())) for f in files
        ]
    return spec


def _extended(
    root: Path,
    base: Path,
    file: str,
    services: dict[str, Any],
    name: str,
    variables: Mapping[str, str],
    seen: tuple[str, ...],
) -> dict[str, Any]:
    """Service `name` of `services` (from `file` in `base`), its extends resolved."""
    spec = services[name]
    if not isinstance(spec, dict):
        return {} if spec is None else spec
    if "extends" not in spec:
        return _rebase(spec, root, base)
    where = f"{file}:{name}"
    if where in seen:
        raise BuildFailed(f"service {name}: extends loops ({' -> '.join((*seen, where))})")
    ext = spec["extends"]
    ext = {"service": ext} if isinstance(ext, str) else ext
    if (
        not isinstance(ext, dict)
        or not isinstance(ext.get("service"), str)
        or set(ext) - {"service", "file"}
    ):
        raise BuildFailed(f"service {name}: extends needs service: (and optionally file:)")
    other_base, other_file, other = base, file, services
    if "file" in ext:
        path = inside(root, base, ext["file"], f"service {name}: extends file")
        other_base, other_file = path.parent, path.name
        other = load(root, other_base, other_file, variables)["services"]
    if ext["service"] not in other:
        raise BuildFailed(
            f"service {name}: extends names {ext['service']!r}, which is not a "
            f"service of {other_file}"
        )
    parent = _extended(
        root, other_base, other_file, other, ext["service"], variables, (*seen, where)
    )
    local = _rebase({k: v for k, v in spec.items() if k != "extends"}, root, base)
    return _merge(parent, local)


def normalise(root: Path, file: str) -> dict[str, Any]:
    """The compose file `file` of the tree at `root`: interpolated from the tree's .env,
    extends resolved, x-* extensions dropped. Raises BuildFailed."""
    variables = dotenv(root)
    data = load(root, root, file, variables)
    services = data["services"]
    data["services"] = {
        name: _extended(root, root, file, services, name, variables, ()) for name in services
    }
    return {k: v for k, v in data.items() if not str(k).startswith("x-")}
