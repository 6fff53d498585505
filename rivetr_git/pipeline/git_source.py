"""Apps whose code lives on a git host: where it is, its credentials, and the deploy that
fetches it (`deploy APP [REF]`, webhooks) before the usual pipeline runs.

The fetch lands in the app's bare repo and moves its deploy branch, as a push would, so
everything after (build, start, rollback, `git push` to the app) works unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from rivetr_git import validate
from rivetr_git.errors import CheckoutFailed, NotFound, ValidationError
from rivetr_git.models import App, LogLine, Status
from rivetr_git.notify import Notifier
from rivetr_git.pipeline.deployer import Deployer, Job
from rivetr_git.pipeline.log import ERROR, HEADER, INDENT
from rivetr_git.secrets.git_secrets import DEPLOY_KEY, TOKEN, WEBHOOK, GitSecrets
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.store.repos import ZERO_SHA, FetchAuth, Repos
from rivetr_git.terminal import neutralise

Write = Callable[[str], Awaitable[None]]


def is_ssh_url(url: str) -> bool:
    return not url.startswith(("http://", "https://"))


class GitSources:
    """Configures apps' git hosts and deploys what they hold."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        repos: Repos,
        secrets: GitSecrets,
        deployer: Deployer,
        notifier: Notifier,
    ) -> None:
        self._settings = settings
        self._notifier = notifier
        self._store = store
        self._repos = repos
        self.secrets = secrets
        self._deployer = deployer
        # One fetch per app at a time: webhooks may arrive together, and two fetches into
        # one repository would race for its refs.
        self._fetching: dict[str, asyncio.Lock] = {}

    def branch_of(self, app: App) -> str:
        return app.deploy_branch or self._settings.deploy_branch

    async def configure(
        self, app: App, url: str | None, branch: str | None, token: str | None
    ) -> list[str]:
        """Set what was given (token '' removes it); returns what changed, for the caller.
        Raises ValidationError with advice on a bad URL or branch."""
        changed = []
        if url is not None:
            try:
                url = validate.git_url(url)
            except ValueError as exc:
                raise ValidationError(f"url: {exc}") from None
            await self._store.set_git_url(app, url)
            changed.append(f"url {url}")
        source = await self._store.git_source(app)
        if source is None:
            raise ValidationError(f"{app.name} has no git URL yet: git:set {app.name} url=URL")
        if branch is not None:
            try:
                branch = validate.branch(branch)
            except ValueError as exc:
                raise ValidationError(f"branch: {exc}") from None
            await self._store.update_app(app.name, deploy_branch=branch)
            changed.append(f"branch {branch}")
        if token is not None:
            if token and is_ssh_url(source.url):
                raise ValidationError(
                    "an ssh:// URL uses the deploy key, not a token: git:key APP prints it"
                )
            await self.secrets.set(app, TOKEN, token)
            changed.append("token removed" if not token else "token set (stored encrypted)")
        return changed

    async def webhook_secret(self, app: App) -> str | None:
        """The app's webhook secret; None until `git:webhook` made one."""
        return await self.secrets.get(app, WEBHOOK)

    async def deploy_key(self, app: App) -> str:
        """A new deploy key for the app (replacing any); returns its public line."""
        if await self._store.git_source(app) is None:
            raise ValidationError(f"{app.name} has no git URL yet: git:set {app.name} url=URL")
        return await self.secrets.new_deploy_key(app, f"rivetr-{app.name}")

    async def fetch_and_submit(self, app: App, ref: str | None, by: str, write: Write) -> Job:
        """Fetch `ref` (default: the app's branch) and queue its deploy; the fetch's own
        lines go to `write`. Raises NotFound without a URL, CheckoutFailed with advice."""
        source = await self._store.git_source(app)
        if source is None:
            raise NotFound(
                f"{app.name} has no git host: git:set {app.name} url=URL (or push to it)"
            )
        branch = self.branch_of(app)
        auth = FetchAuth(
            token=await self.secrets.get(app, TOKEN),
            private_key=await self.secrets.get(app, DEPLOY_KEY),
            public_key=source.public_key,
        )
        wanted = ref or branch
        await write(f"{HEADER}Fetching {wanted} from {source.url}")
        started = time.monotonic()
        try:
            async with self._fetching.setdefault(app.name, asyncio.Lock()):
                sha = await self._repos.fetch(app.name, source.url, wanted, auth, branch)
        except CheckoutFailed as exc:
            await self._record_failure(app, f"fetch {wanted} from {source.url}", by, exc)
            raise
        info = await self._repos.commit_info(app.name, sha)
        await write(
            f"{INDENT}fetched {sha[:7]} ({neutralise(info.message[:60])}) in "
            f"{time.monotonic() - started:.1f}s"
        )
        return await self._deployer.submit(app, sha, by)

    async def _record_failure(self, app: App, what: str, by: str, exc: CheckoutFailed) -> None:
        """A fetch that failed is a failed deployment (no commit: zeros), so `deploys`,
        its log and the deploy.failed event show it, also for webhooks nobody watches."""
        found = await self._store.create_deployment(app, ZERO_SHA, what, by)
        await self._store.set_status(found.id, Status.FAILED, error_message=str(exc))
        self._deployer.finished_elsewhere(await self._store.get_deployment(found.id))
        line = f"{ERROR}Deploy failed at cloning: {neutralise(exc.reason)}"
        await self._store.append_logs(found.id, [LogLine(time.time(), "cloning", "system", line)])
        self._notifier.notify(
            "deploy.failed", app, deployment_id=found.id, stage="cloning", reason=exc.reason
        )
