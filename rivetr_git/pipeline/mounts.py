"""An app's storage (`storage:*`): named volumes of the app and admin-mounted host directories.

A volume belongs to the app, not to a release: it is named rivetr-<instance>-<app>-<volume>,
labelled like the app's containers, created on first mount and mounted into every container
the app starts from then on (deploys, restarts, rollbacks, `run`), so what one release wrote
the next one sees. It outlives unmount and apps:destroy; only `apps:destroy --purge-data`
removes it. Host directories are mounted only by admins, only under the `storage_root`
setting, with symlinks resolved, and checked again whenever a container starts.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from rivetr_git.errors import AccessDenied, StartFailed, ValidationError
from rivetr_git.models import App
from rivetr_git.pipeline.labels import labels
from rivetr_git.runtime.base import LABEL_VOLUME, Mount, Runtime
from rivetr_git.store.database import Store
from rivetr_git.store.mounts import AppMount

VOLUME_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
USAGE = "give VOLUME:/path/in/container (e.g. data:/app/data) or /host/dir:/path (admins)"


def volume_name(instance: str, app: str, volume: str) -> str:
    """The engine's name of an app volume: clearly this server's and this app's."""
    return f"rivetr-{instance}-{app}-{volume}"


def container_path(value: str) -> str:
    """An absolute path in the container, not `/` and without `..`. Raises ValidationError."""
    path = PurePosixPath(value)
    if not value.startswith("/") or ".." in path.parts or str(path) == "/" or "\0" in value:
        raise ValidationError(
            f"{value!r} is not a path to mount at: give an absolute path in the container "
            "other than / and without .., e.g. /app/data"
        )
    return str(path)


def host_dir(value: str, storage_root: str) -> str:
    """`value` resolved (symlinks followed), if it is a directory under `storage_root`.
    Raises ValidationError."""
    if not storage_root:
        raise ValidationError(
            "host directories cannot be mounted: the storage_root setting is empty (off); "
            "set it to the directory host mounts may come from, or mount a named volume"
        )
    root = Path(storage_root).resolve()
    resolved = Path(value).resolve()
    if not resolved.is_relative_to(root):
        raise ValidationError(
            f"{value} is outside storage_root ({root}, symlinks resolved); "
            "host mounts must come from under it"
        )
    if not resolved.is_dir():
        raise ValidationError(f"{value} is not a directory on the server; create it first")
    return str(resolved)


def parse(spec: str, storage_root: str, is_admin: bool) -> AppMount:
    """`VOLUME:/path` or `/host/dir:/path` as a mount. Raises ValidationError/AccessDenied."""
    source, sep, target = spec.rpartition(":")
    if not sep or not source:
        raise ValidationError(f"{spec!r}: {USAGE}")
    target = container_path(target)
    if source.startswith("/"):
        if not is_admin:
            raise AccessDenied("only admins may mount host directories; mount a named volume")
        return AppMount(target, host_dir(source, storage_root), bind=True)
    if not VOLUME_NAME.match(source):
        raise ValidationError(
            f"{source!r} is not a volume name: use lower-case letters, digits, '.', '_' "
            "and '-' (up to 63), starting with a letter or digit"
        )
    return AppMount(target, source, bind=False)


async def container_mounts(
    store: Store, instance: str, app: App, storage_root: str
) -> tuple[Mount, ...]:
    """What every new container of `app` mounts. A host directory no longer under
    storage_root (the setting or a symlink changed) fails the start. Raises StartFailed."""
    found = []
    for m in await store.mounts(app):
        if m.bind:
            try:
                source = host_dir(m.source, storage_root)
            except ValidationError as exc:
                raise StartFailed(
                    f"{exc}; storage:unmount {app.name} {m.target} or fix the directory"
                ) from None
        else:
            source = volume_name(instance, app.name, m.source)
        found.append(Mount(source=source, target=m.target, bind=m.bind))
    return tuple(found)


class Storage:
    """The storage verbs' work, on the store and the runtime."""

    def __init__(self, store: Store, runtime: Runtime, instance: str, storage_root: str) -> None:
        self._store = store
        self._runtime = runtime
        self._instance = instance
        self.storage_root = storage_root

    async def mount(self, app: App, spec: str, is_admin: bool) -> str:
        mount = parse(spec, self.storage_root, is_admin)
        await self._store.add_mount(app, mount)  # refused first if the path is taken
        if not mount.bind:
            name = volume_name(self._instance, app.name, mount.source)
            try:
                await self._runtime.create_volume(
                    name, {**labels(self._instance, app.name), LABEL_VOLUME: mount.source}
                )
            except BaseException:
                await self._store.remove_mount(app, mount.target)
                raise
        what = "host directory" if mount.bind else "volume"
        return (
            f"{what} {mount.source} mounted at {mount.target} in {app.name}; containers "
            f"started from now on have it (ps:restart {app.name} to apply it now)"
        )

    async def unmount(self, app: App, target: str) -> str:
        mount = await self._store.remove_mount(app, container_path(target))
        kept = "" if mount.bind else " (the volume and its data are kept)"
        return (
            f"{mount.source} unmounted from {mount.target} in {app.name}{kept}; containers "
            f"started from now on lack it (ps:restart {app.name} to apply it now)"
        )

    async def rows(self, app: App) -> list[tuple[str, str, str]]:
        """(volume or host directory, container path, size) of each mount."""
        sizes = await self._runtime.volume_sizes()
        out = []
        for m in await self._store.mounts(app):
            size = None if m.bind else sizes.get(volume_name(self._instance, app.name, m.source))
            out.append((m.source, m.target, "-" if size is None else _human(size)))
        return out

    async def after_destroy(self, app: str, purge: bool) -> str:
        """Remove the destroyed app's volumes (`purge`) or say which are kept."""
        volumes = await self._runtime.list_volumes(labels(self._instance, app))
        found = sorted(name for name, tags in volumes.items() if LABEL_VOLUME in tags)
        if not found:
            return f"{app} had no volumes"
        if purge:
            for name in found:
                await self._runtime.remove_volume(name)
            return f"removed the volumes of {app}: {', '.join(found)}"
        return (
            f"kept the volumes of {app}: {', '.join(found)} (data stays; an app of "
            f"the same name mounting them sees it; apps:destroy --purge-data removes them)"
        )


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
