"""What a pushed compose file may say: normalised first, then checked against an allowlist.

Normalising is done here in Python (yaml.safe_load resolves anchors and merge keys; `extends`
and `${VAR}` interpolation are resolved below) rather than by `docker-compose config`: no tool
reads an untrusted file before it is checked, and interpolation cannot reach the server's
environment because it only ever sees the pushed tree's own `.env`. `include` is refused:
docker-compose 1.29 (the one installed here) does not know it.

Every path a file names (build context, Dockerfile, env_file, extends.file) must stay inside
the pushed tree after symlinks are followed. Every key of a service must be on the allowlist;
the keys that would reach the host (host namespaces, privileges, devices, bind mounts, other
apps' volumes and networks) are refused for every pusher with the service, the key and advice.
Only `allowed_binds` (an admin-only app setting) lets a bind mount through, exactly as named.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from rivetr_git.errors import BuildFailed

HOST = "compose apps run without host access"
LIMITS = "resource limits are the app's own; an admin sets them with limits:set"
# A service may say these; each is checked further below where it names a path or a volume.
SERVICE_KEYS = frozenset({
    "build", "image", "command", "entrypoint", "environment", "env_file", "depends_on",
    "healthcheck", "volumes", "tmpfs", "expose", "user", "working_dir", "stop_signal",
    "stop_grace_period", "labels", "init", "read_only", "hostname", "domainname", "networks",
    "links", "extra_hosts", "dns", "dns_search", "dns_opt", "stdin_open", "tty", "shm_size",
    "cap_drop", "profiles", "platform", "pull_policy",
})
# The server sets these itself: what the file says is dropped (see compose.rewrite).
REPLACED = frozenset({"ports", "container_name", "restart", "logging"})
# Refused with specific advice; any other key gets the generic refusal.
ADVICE = {
    **dict.fromkeys(("privileged", "pid", "ipc", "uts", "userns_mode", "network_mode",
                     "cap_add", "devices", "device_cgroup_rules", "security_opt", "sysctls",
                     "cgroup_parent", "cgroup", "isolation", "oom_kill_disable", "group_add",
                     "runtime", "mac_address", "storage_opt", "gpus"), HOST),
    **dict.fromkeys(("mem_limit", "memswap_limit", "mem_reservation", "mem_swappiness",
                     "cpus", "cpu_count", "cpu_percent", "cpu_shares", "cpu_quota",
                     "cpu_period", "cpu_rt_runtime", "cpu_rt_period", "cpuset", "pids_limit",
                     "blkio_config", "oom_score_adj", "deploy", "scale"), LIMITS),
    # Raising limits above the host's is possible from a root daemon; under Podman the
    # server must set them itself or containers do not start.
    "ulimits": "ulimits are the server's; " + HOST,
    "volumes_from": "volumes_from reaches into other containers; share a named volume "
                    "declared under volumes: instead",
    "external_links": "external_links reaches other apps' containers; " + HOST,
    "secrets": "secrets and configs are files of the host; use the app's env vars "
               "(config:set) instead",
    "configs": "secrets and configs are files of the host; use the app's env vars "
               "(config:set) instead",
}
BUILD_KEYS = frozenset({"context", "dockerfile", "args", "target", "labels", "cache_from",
                        "shm_size", "extra_hosts"})
TOP_KEYS = frozenset({"version", "services", "volumes", "networks", "name"})
VOLUME_KEYS = frozenset({"driver", "labels"})
NETWORK_KEYS = frozenset({"driver", "labels", "internal", "attachable"})
MOUNT_KEYS = frozenset({"type", "source", "target", "read_only", "volume", "tmpfs",
                        "consistency"})
RESERVED_LABELS = ("rivetr.", "com.docker.compose.")
OUR_IMAGES = re.compile(r"(localhost/)?rivetr-[^/]+/")  # labels.image_repository (and Podman's)
_VAR = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", re.S)


def refuse(where: str, key: str, value: Any, advice: str) -> BuildFailed:
    shown = value if isinstance(value, str) else json.dumps(value)  # true, not True
    return BuildFailed(f"{where}: \"{key}: {shown}\" is not allowed; {advice}")


# --- normalising --------------------------------------------------------------------------


def inside(root: Path, base: Path, path: Any, what: str) -> Path:
    """`path` (relative to `base`) resolved, if it stays inside `root`. Raises BuildFailed."""
    if not isinstance(path, str) or not path:
        raise BuildFailed(f"{what} must be a relative path inside the pushed tree")
    if path.startswith(("/", "~", "\\")) or "://" in path or path.startswith("git@") \
            or re.match(r"[A-Za-z]:", path):
        raise BuildFailed(f"{what} {path!r} is outside the pushed tree; {HOST}: name a path "
                          "relative to the compose file, inside the repository")
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise BuildFailed(f"{what} {path!r} leads outside the pushed tree (through '..' or a "
                          f"symlink); {HOST}: name a path inside the repository")
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
            raise BuildFailed(f"{name}: invalid interpolation {match.group(0)!r}; write "
                              "${NAME}, ${NAME:-default} or $$ for a literal $")
        var, op, arg = braced.groups()
        present = var in variables and (variables[var] != "" or op is None or ":" not in op)
        if present:
            return variables[var]
        if op in (":?", "?"):
            raise BuildFailed(f"{name}: variable {var} is required: {arg or 'not set'} (only "
                              "the pushed .env is read; the server's environment is not)")
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
            raise BuildFailed(f"{file} expands to more than {MAX_NODES} values (through YAML "
                              "anchors?); write it out plainly")
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
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict) \
            or not data["services"]:
        raise BuildFailed(f"{file} defines no services")
    _within_budget(data, file)
    if "include" in data:
        raise BuildFailed(f"{file}: \"include\" is not supported here (docker-compose 1.29); "
                          "put the services in this file, or use extends: with a file inside "
                          "the repository")
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
        elif key in ("volumes", "expose", "tmpfs", "dns", "cap_drop") \
                and isinstance(old, list) and isinstance(value, list):
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
        spec["env_file"] = [str(inside(root, base, f, "env_file").relative_to(root.resolve()))
                            for f in files]
    return spec


def _extended(root: Path, base: Path, file: str, services: dict[str, Any], name: str,
              variables: Mapping[str, str], seen: tuple[str, ...]) -> dict[str, Any]:
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
    if not isinstance(ext, dict) or not isinstance(ext.get("service"), str) \
            or set(ext) - {"service", "file"}:
        raise BuildFailed(f"service {name}: extends needs service: (and optionally file:)")
    other_base, other_file, other = base, file, services
    if "file" in ext:
        path = inside(root, base, ext["file"], f"service {name}: extends file")
        other_base, other_file = path.parent, path.name
        other = load(root, other_base, other_file, variables)["services"]
    if ext["service"] not in other:
        raise BuildFailed(f"service {name}: extends names {ext['service']!r}, which is not a "
                          f"service of {other_file}")
    parent = _extended(root, other_base, other_file, other, ext["service"], variables,
                       (*seen, where))
    local = _rebase({k: v for k, v in spec.items() if k != "extends"}, root, base)
    return _merge(parent, local)


def normalise(root: Path, file: str) -> dict[str, Any]:
    """The compose file `file` of the tree at `root`: interpolated from the tree's .env,
    extends resolved, x-* extensions dropped. Raises BuildFailed."""
    variables = dotenv(root)
    data = load(root, root, file, variables)
    services = data["services"]
    data["services"] = {name: _extended(root, root, file, services, name, variables, ())
                        for name in services}
    return {k: v for k, v in data.items() if not str(k).startswith("x-")}


# --- checking -----------------------------------------------------------------------------


def check(data: Mapping[str, Any], root: Path, allowed_binds: Collection[str] = ()) -> None:
    """Refuse anything not on the allowlist (see the module docstring). Raises BuildFailed."""
    for key in data:
        if key not in TOP_KEYS:
            raise refuse("top level", str(key), "...", "a compose file may have version, "
                         "services, volumes, networks and x-* extensions")
    volumes = _declared(data.get("volumes"), "volume", VOLUME_KEYS)
    networks = _declared(data.get("networks"), "network", NETWORK_KEYS)
    for name, spec in data["services"].items():
        where = f"service {name}"
        if not isinstance(spec, dict):
            raise BuildFailed(f"{where}: a service must be a mapping of keys")
        for key, value in spec.items():
            if key in REPLACED:
                continue
            if key not in SERVICE_KEYS:
                raise refuse(where, key, value, ADVICE.get(
                    key, "it is not on the list of keys a compose app may use here (see the "
                    "README, build type compose)"))
        _check_build(where, spec.get("build"), root)
        for env_file in _as_list(spec.get("env_file")):
            inside(root, root, env_file, f"{where}: env_file")
        for mount in _as_list(spec.get("volumes")):
            _check_mount(where, mount, volumes, allowed_binds)
        for network in as_dict(spec.get("networks")) if isinstance(
                spec.get("networks"), dict) else _as_list(spec.get("networks")):
            if network != "default" and network not in networks:
                raise BuildFailed(f"{where}: network {network!r} is not declared under the "
                                  "top-level networks:")
        for label in as_dict(spec.get("labels")):
            if label.startswith(RESERVED_LABELS):
                raise refuse(where, "labels", label, "labels starting with rivetr. or "
                             "com.docker.compose. are the server's")
        image = spec.get("image")
        if isinstance(image, str) and OUR_IMAGES.match(image) and not spec.get("build"):
            raise refuse(where, "image", image, "images of this server's apps are not for "
                         "compose files; build the service from the repository")


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _declared(section: Any, what: str, keys: frozenset[str]) -> set[str]:
    """Names of the top-level volumes or networks; refuses external ones and driver options
    (the local driver's `o: bind` is a bind mount; other network drivers reach the host)."""
    if section is None:
        return set()
    if not isinstance(section, dict):
        raise BuildFailed(f"top-level {what}s must be a mapping of names")
    for name, spec in section.items():
        for key, value in (spec or {}).items():
            allowed = key in keys and not (key == "driver" and value not in (
                "local" if what == "volume" else "bridge",))
            if not allowed:
                advice = (f"external {what}s belong to something else; declare the {what} "
                          "without it" if key == "external" else
                          f"{HOST}: declare the {what} with no options, or only labels")
                raise refuse(f"{what} {name}", key, value, advice)
    return set(section)


def _check_build(where: str, build: Any, root: Path) -> None:
    if build is None:
        return
    build = {"context": build} if isinstance(build, str) else build
    if not isinstance(build, dict):
        raise BuildFailed(f"{where}: build must be a path or a mapping")
    for key, value in build.items():
        if key not in BUILD_KEYS:
            raise refuse(f"{where}: build", key, value, "builds run on the default network "
                         "from the pushed tree; build may say context, dockerfile, args, "
                         "target, labels, cache_from, shm_size, extra_hosts")
    context = inside(root, root, build.get("context", "."), f"{where}: build context")
    if "dockerfile" in build:
        inside(root, context, build["dockerfile"], f"{where}: build dockerfile")


def _bind_allowed(source: Any, target: Any, read_only: bool, binds: Collection[str]) -> bool:
    """Whether an admin allowed exactly this bind mount (HOST:CONTAINER, or HOST:CONTAINER:ro
    which allows it read-only only)."""
    pair = f"{source}:{target}"
    return pair in binds or (read_only and f"{pair}:ro" in binds)


def _check_mount(where: str, mount: Any, volumes: set[str], binds: Collection[str]) -> None:
    """A named volume declared in the file, an anonymous one or a tmpfs; a bind mount only
    when an admin allowed exactly it."""
    if isinstance(mount, str):
        parts = mount.split(":")
        source = parts[0] if len(parts) > 1 else None
        if source is None:
            return  # an anonymous volume at a container path
        if len(parts) <= 3 and _bind_allowed(parts[0], parts[1], parts[2:] == ["ro"], binds):
            return
        if source and not source.startswith((".", "/", "~")) and "/" not in source \
                and "$" not in source:
            if source not in volumes:
                raise BuildFailed(f"{where}: volume {source!r} is not declared under the "
                                  "top-level volumes:")
            return
        raise refuse(where, "volumes", mount, f"{HOST}; use a named volume declared under "
                     "volumes: (an admin can allow one exactly with compose:allow)")
    if not isinstance(mount, dict):
        raise BuildFailed(f"{where}: a volume must be a string or a mapping")
    kind = mount.get("type", "volume")
    for key in mount:
        if key not in MOUNT_KEYS:
            raise refuse(where, f"volumes.{key}", mount[key], HOST)
    if kind == "tmpfs" or (kind == "volume" and mount.get("source") is None):
        return
    source = mount.get("source")
    if kind == "volume" and isinstance(source, str) and source in volumes:
        return
    if kind == "bind" and set(mount) <= {"type", "source", "target", "read_only"} \
            and _bind_allowed(source, mount.get("target"), mount.get("read_only") is True,
                              binds):
        return
    if kind == "volume":
        raise BuildFailed(f"{where}: volume {source!r} is not declared under the top-level "
                          "volumes:")
    raise refuse(where, "volumes", mount, f"{HOST}; use a named volume declared under "
                 "volumes: (an admin can allow one exactly with compose:allow)")
