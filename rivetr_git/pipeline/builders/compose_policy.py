"""What a normalised compose file may say: every key checked against an allowlist.

Every key of a service must be on the allowlist; the keys that would reach the host (host
namespaces, privileges, devices, bind mounts, other apps' volumes and networks) are refused for
every pusher with the service, the key and advice. Only `allowed_binds` (an admin-only app
setting) lets a bind mount through, exactly as named. The file is normalised first
(compose_normalise: anchors, extends, interpolation, paths inside the tree).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from rivetr_git.errors import BuildFailed
from rivetr_git.pipeline.builders.compose_normalise import HOST, as_dict, inside

LIMITS = "resource limits are the app's own; an admin sets them with limits:set"
# A service may say these; each is checked further below where it names a path or a volume.
SERVICE_KEYS = frozenset(
    {
        "build",
        "image",
        "command",
        "entrypoint",
        "environment",
        "env_file",
        "depends_on",
        "healthcheck",
        "volumes",
        "tmpfs",
        "expose",
        "user",
        "working_dir",
        "stop_signal",
        "stop_grace_period",
        "labels",
        "init",
        "read_only",
        "hostname",
        "domainname",
        "networks",
        "links",
        "extra_hosts",
        "dns",
        "dns_search",
        "dns_opt",
        "stdin_open",
        "tty",
        "shm_size",
        "cap_drop",
        "profiles",
        "platform",
        "pull_policy",
    }
)
# The server sets these itself: what the file says is dropped (see compose.rewrite).
REPLACED = frozenset({"ports", "container_name", "restart", "logging"})
# Refused with specific advice; any other key gets the generic refusal.
ADVICE = {
    **dict.fromkeys(
        (
            "privileged",
            "pid",
            "ipc",
            "uts",
            "userns_mode",
            "network_mode",
            "cap_add",
            "devices",
            "device_cgroup_rules",
            "security_opt",
            "sysctls",
            "cgroup_parent",
            "cgroup",
            "isolation",
            "oom_kill_disable",
            "group_add",
            "runtime",
            "mac_address",
            "storage_opt",
            "gpus",
        ),
        HOST,
    ),
    **dict.fromkeys(
        (
            "mem_limit",
            "memswap_limit",
            "mem_reservation",
            "mem_swappiness",
            "cpus",
            "cpu_count",
            "cpu_percent",
            "cpu_shares",
            "cpu_quota",
            "cpu_period",
            "cpu_rt_runtime",
            "cpu_rt_period",
            "cpuset",
            "pids_limit",
            "blkio_config",
            "oom_score_adj",
            "deploy",
            "scale",
        ),
        LIMITS,
    ),
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
BUILD_KEYS = frozenset(
    {"context", "dockerfile", "args", "target", "labels", "cache_from", "shm_size", "extra_hosts"}
)
TOP_KEYS = frozenset({"version", "services", "volumes", "networks", "name"})
VOLUME_KEYS = frozenset({"driver", "labels"})
NETWORK_KEYS = frozenset({"driver", "labels", "internal", "attachable"})
MOUNT_KEYS = frozenset({"type", "source", "target", "read_only", "volume", "tmpfs", "consistency"})
RESERVED_LABELS = ("rivetr.", "com.docker.compose.")
SERVICE_NAME = re.compile(r"[a-zA-Z0-9._-]+")  # the Compose Spec's pattern
OUR_IMAGES = re.compile(r"(localhost/)?rivetr-[^/]+/")  # labels.image_repository (and Podman's)


def refuse(where: str, key: str, value: Any, advice: str) -> BuildFailed:
    shown = value if isinstance(value, str) else json.dumps(value)  # true, not True
    return BuildFailed(f'{where}: "{key}: {shown}" is not allowed; {advice}')


def check(data: Mapping[str, Any], root: Path, allowed_binds: Collection[str] = ()) -> None:
    """Refuse anything not on the allowlist (see the module docstring). Raises BuildFailed."""
    for key in data:
        if key not in TOP_KEYS:
            raise refuse(
                "top level",
                str(key),
                "...",
                "a compose file may have version, services, volumes, networks and x-* extensions",
            )
    volumes = _declared(data.get("volumes"), "volume", VOLUME_KEYS)
    networks = _declared(data.get("networks"), "network", NETWORK_KEYS)
    for name, spec in data["services"].items():
        if not SERVICE_NAME.fullmatch(str(name)):
            # Compose's own rule, checked before rivetr names files and images after it.
            raise BuildFailed(
                f"service {name!r}: a service name may use letters, digits, '.', '_' and "
                "'-' only; rename it"
            )
        _check_service(f"service {name}", spec, root, volumes, networks, allowed_binds)


def _check_service(
    where: str,
    spec: Any,
    root: Path,
    volumes: set[str],
    networks: set[str],
    allowed_binds: Collection[str],
) -> None:
    """One service: its keys on the allowlist, its paths, mounts, networks, labels, image."""
    if not isinstance(spec, dict):
        raise BuildFailed(f"{where}: a service must be a mapping of keys")
    for key, value in spec.items():
        if key in REPLACED:
            continue
        if key not in SERVICE_KEYS:
            raise refuse(
                where,
                key,
                value,
                ADVICE.get(
                    key,
                    "it is not on the list of keys a compose app may use here (see the "
                    "README, build type compose)",
                ),
            )
    _check_build(where, spec.get("build"), root)
    for env_file in _as_list(spec.get("env_file")):
        inside(root, root, env_file, f"{where}: env_file")
    for mount in _as_list(spec.get("volumes")):
        _check_mount(where, mount, volumes, allowed_binds)
    for network in (
        as_dict(spec.get("networks"))
        if isinstance(spec.get("networks"), dict)
        else _as_list(spec.get("networks"))
    ):
        if network != "default" and network not in networks:
            raise BuildFailed(
                f"{where}: network {network!r} is not declared under the top-level networks:"
            )
    for label in as_dict(spec.get("labels")):
        if label.startswith(RESERVED_LABELS):
            raise refuse(
                where,
                "labels",
                label,
                "labels starting with rivetr. or com.docker.compose. are the server's",
            )
    image = spec.get("image")
    if isinstance(image, str) and OUR_IMAGES.match(image) and not spec.get("build"):
        raise refuse(
            where,
            "image",
            image,
            "images of this server's apps are not for "
            "compose files; build the service from the repository",
        )


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
            allowed = key in keys and not (
                key == "driver" and value not in ("local" if what == "volume" else "bridge",)
            )
            if not allowed:
                advice = (
                    f"external {what}s belong to something else; declare the {what} without it"
                    if key == "external"
                    else f"{HOST}: declare the {what} with no options, or only labels"
                )
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
            raise refuse(
                f"{where}: build",
                key,
                value,
                "builds run on the default network "
                "from the pushed tree; build may say context, dockerfile, args, "
                "target, labels, cache_from, shm_size, extra_hosts",
            )
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
        if (
            source
            and not source.startswith((".", "/", "~"))
            and "/" not in source
            and "$" not in source
        ):
            if source not in volumes:
                raise BuildFailed(
                    f"{where}: volume {source!r} is not declared under the top-level volumes:"
                )
            return
        raise refuse(
            where,
            "volumes",
            mount,
            f"{HOST}; use a named volume declared under "
            "volumes: (an admin can allow one exactly with compose:allow)",
        )
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
    if (
        kind == "bind"
        and set(mount) <= {"type", "source", "target", "read_only"}
        and _bind_allowed(source, mount.get("target"), mount.get("read_only") is True, binds)
    ):
        return
    if kind == "volume":
        raise BuildFailed(
            f"{where}: volume {source!r} is not declared under the top-level volumes:"
        )
    raise refuse(
        where,
        "volumes",
        mount,
        f"{HOST}; use a named volume declared under "
        "volumes: (an admin can allow one exactly with compose:allow)",
    )
