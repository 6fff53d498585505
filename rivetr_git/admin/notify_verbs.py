"""The notify:* verbs: an app's notification channels, or the server-wide ones (no app,
admin keys only). URLs are stored encrypted (secrets/channels.py) and shown masked."""

from __future__ import annotations

from rivetr_git.admin.dispatch import Caller, Handler, Session, visible_app
from rivetr_git.admin.verbs import Invocation
from rivetr_git.errors import AccessDenied, ValidationError
from rivetr_git.models import App
from rivetr_git.notify import EVENTS, Notifier
from rivetr_git.notify import channels as kinds
from rivetr_git.notify.channels import Channel
from rivetr_git.secrets.channels import Channels
from rivetr_git.store.database import Store


class NotifyVerbs:
    def __init__(self, store: Store, channels: Channels, notifier: Notifier) -> None:
        self._store = store
        self._channels = channels
        self._notifier = notifier

    @property
    def handlers(self) -> dict[str, Handler]:
        return {
            "notify:add": self._add,
            "notify:list": self._list,
            "notify:remove": self._remove,
            "notify:test": self._test,
        }

    async def _owner(self, name: str | None, caller: Caller) -> App | None:
        """The app named (if the caller may see it), or None for the server-wide channels,
        which only admin keys may change or read."""
        if name is not None:
            return await visible_app(self._store, name, caller)
        if not caller.is_admin:
            raise AccessDenied("server-wide channels are for admin keys; name an app of yours")
        return None

    async def _add(self, inv: Invocation, caller: Caller, s: Session) -> int:
        target = list(inv.args.target)
        if len(target) > 2:
            raise ValidationError("give [APP] URL: one URL (quote it for your shell)")
        app = await self._owner(target[0] if len(target) == 2 else None, caller)
        try:
            url = kinds.check(target[-1])
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        events = _events(inv.args.events)
        channel_id = await self._channels.add(app, url, events)
        where = app.name if app else "every app"
        await s.out(
            f"channel #{channel_id} added for {where}: {kinds.mask(url)} "
            f"({', '.join(events) if events else 'all events'}); try it with notify:test"
        )
        return 0

    async def _list(self, inv: Invocation, caller: Caller, s: Session) -> int:
        app = await self._owner(inv.args.app_name, caller)
        found = await self._channels.list(app)
        if not found:
            await s.out(f"no channels; add one with notify:add {app.name if app else ''}URL")
            return 0
        for channel_id, _, url, events in found:
            shown = ",".join(sorted(events)) if events else "all events"
            await s.out(f"#{channel_id}  {kinds.mask(url)}  {shown}")
        return 0

    async def _remove(self, inv: Invocation, caller: Caller, s: Session) -> int:
        target = list(inv.args.target)
        number = target[-1].removeprefix("#")
        if len(target) > 2 or not number.isdigit():
            raise ValidationError("give [APP] ID, the channel's number from notify:list")
        app = await self._owner(target[0] if len(target) == 2 else None, caller)
        await self._channels.remove(app, int(number))
        await s.out(f"channel #{number} removed")
        return 0

    async def _test(self, inv: Invocation, caller: Caller, s: Session) -> int:
        app = await self._owner(inv.args.app_name, caller)
        found = [Channel(i, a, u, e) for i, a, u, e in await self._channels.list(app)]
        if not found:
            raise ValidationError("no channels to test; add one with notify:add")
        results = await self._notifier.test(app.name if app else "rivetr-git", found)
        for channel, sent in zip(found, results, strict=True):
            await s.out(f"#{channel.id}  {kinds.mask(channel.url)}  {'sent' if sent else 'FAILED'}")
        return 0 if all(results) else 1


def _events(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [e.strip() for e in raw.split(",") if e.strip()]
    unknown = [e for e in names if e not in EVENTS]
    if unknown or not names:
        raise ValidationError(
            f"--events {raw!r}: give event names separated by commas, from "
            f"{', '.join(sorted(EVENTS))}"
        )
    return list(dict.fromkeys(names))
