"""The git-host verbs (`git:set`, `git:key`, `git:webhook`, `deploy`) and the HTTP API's
tokens (`tokens:create|list|revoke`).

A token is shown once, when made; only its SHA-256 is stored, so a stolen database holds
nothing that works. Tokens and webhook secrets never appear in errors or logs.
"""

from __future__ import annotations

import hashlib
import secrets

from rivetr_git.admin import render
from rivetr_git.admin.dispatch import AppHandler, Caller, Handler, Session
from rivetr_git.admin.verbs import Invocation
from rivetr_git.errors import AccessDenied, ValidationError
from rivetr_git.models import App
from rivetr_git.names import validate_app_name, validate_key_name
from rivetr_git.pipeline.git_source import GitSources
from rivetr_git.pipeline.releases import follow
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store

TOKEN_PREFIX = "rvt_"
HOSTS = ("github", "gitlab", "gitea")


def token_digest(token: str) -> str:
    """What is stored of an API token (and looked up on each request)."""
    return hashlib.sha256(token.encode()).hexdigest()


def api_base_url(settings: Settings) -> str:
    if settings.api_public_url:
        return settings.api_public_url
    host = "HOST" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    return f"http://{host}:{settings.api_port}"


def git_assignments(items: list[str]) -> dict[str, str]:
    """url=, branch=, token= from `git:set`; errors never quote a value (it may be a token)."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ("url", "branch", "token"):
            raise ValidationError(
                "git:set takes url=URL, branch=NAME or token=TOKEN (an argument was not "
                "one of them; not shown, it may hold a token)"
            )
        found[key] = value
    return found


class GitVerbs:
    def __init__(self, settings: Settings, store: Store, sources: GitSources) -> None:
        self._settings = settings
        self._store = store
        self.sources = sources

    def app_handlers(self) -> dict[str, AppHandler]:
        return {
            "git:set": self._git_set,
            "git:key": self._git_key,
            "git:webhook": self._git_webhook,
            "deploy": self._deploy,
        }

    async def _git_set(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        values = git_assignments(inv.args.assignments)
        if "url" in values and not caller.is_admin:
            # The server fetches from whatever URL is set: only admins choose where to.
            raise AccessDenied("git:set url= is for admin keys (branch= and token= are not)")
        changed = await self.sources.configure(
            app, values.get("url"), values.get("branch"), values.get("token")
        )
        await s.out(f"git of {app.name}: {', '.join(changed)}; `deploy {app.name}` fetches it")
        return 0

    async def _git_key(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        public = await self.sources.deploy_key(app)
        await s.out(public)
        await s.out(
            "add it to the repository as a read-only deploy key (GitHub: Settings > Deploy "
            "keys; GitLab: Settings > Repository > Deploy keys; Gitea: Settings > Deploy Keys)"
        )
        return 0

    async def _git_webhook(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        secret = await self.sources.secrets.webhook_secret(app, rotate=inv.args.rotate)
        base = api_base_url(self._settings)
        for host in HOSTS:
            await s.out(f"{host + ':':8}{base}/hooks/{host}/{app.name}")
        await s.out(f"secret: {secret}")
        await s.out(
            "content type application/json, push events; the host must reach this URL "
            "(api_host, api_public_url)"
        )
        return 0

    async def _deploy(self, inv: Invocation, app: App, caller: Caller, s: Session) -> int:
        job = await self.sources.fetch_and_submit(app, inv.args.ref, caller.name, s.out)
        return await follow(job, s.out)


class TokenVerbs:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.handlers: dict[str, Handler] = {
            "tokens:create": self._create,
            "tokens:list": self._list,
            "tokens:revoke": self._revoke,
        }

    async def _create(self, inv: Invocation, caller: Caller, s: Session) -> int:
        name = validate_key_name(inv.args.name)
        apps = None
        if inv.args.apps:
            apps = sorted({validate_app_name(a) for a in inv.args.apps})
            for app in apps:
                await self._store.get_app(app)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._store.create_api_token(name, token_digest(token), apps, inv.args.read_only)
        await s.out(token)
        await s.out("shown once: only its hash is stored. Send it as Authorization: Bearer TOKEN")
        return 0

    async def _list(self, inv: Invocation, caller: Caller, s: Session) -> int:
        rows = [
            (
                t.name,
                ",".join(t.apps) if t.apps is not None else "(all, admin)",
                "read-only" if t.read_only else "read-write",
                t.created_at[:19],
                (t.last_used or "-")[:19],
            )
            for t in await self._store.api_tokens()
        ]
        if not rows:
            await s.out("no tokens yet; tokens:create NAME makes one")
            return 0
        await s.out(render.table(rows, ("NAME", "APPS", "ACCESS", "CREATED", "LAST USED")))
        return 0

    async def _revoke(self, inv: Invocation, caller: Caller, s: Session) -> int:
        await self._store.revoke_api_token(inv.args.name)
        await s.out(f"revoked token {inv.args.name}")
        return 0
