"""The storage verbs: `storage:mount`, `storage:unmount`, `storage:list`."""

from __future__ import annotations

from rivetr_git.admin.dispatch import AppHandler, Caller, Session
from rivetr_git.admin.verbs import Invocation
from rivetr_git.models import App
from rivetr_git.pipeline.mounts import Storage


class StorageVerbs:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.app_handlers: dict[str, AppHandler] = {
            "storage:mount": self._mount,
            "storage:unmount": self._unmount,
            "storage:list": self._list,
        }

    async def _mount(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        await s.out(await self._storage.mount(app, inv.args.mount, caller.is_admin))
        return 0

    async def _unmount(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        await s.out(await self._storage.unmount(app, inv.args.path))
        return 0

    async def _list(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        rows = await self._storage.rows(app)
        if not rows:
            await s.out(f"{app.name} mounts nothing; storage:mount {app.name} data:/data adds one")
            return 0
        width = max(len(r[0]) for r in rows)
        path_width = max(len(r[1]) for r in rows)
        await s.out(f"{'VOLUME':<{width}}  {'PATH':<{path_width}}  SIZE")
        for source, target, size in rows:
            await s.out(f"{source:<{width}}  {target:<{path_width}}  {size}")
        return 0
