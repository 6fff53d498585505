"""The JSON API under /api/v1/: one table of routes (served, and described by the OpenAPI
document), each answered by the admin verbs or the store the SSH verbs use.

Reads come back as JSON objects from the store; actions run the admin verb itself (same
checks, same effects) and return its output lines. A read-only token may only GET.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from rivetr_git.admin.dispatch import Caller, visible_app
from rivetr_git.admin.service import Admin
from rivetr_git.api.auth import Auth
from rivetr_git.api.deploy_stream import stream_log
from rivetr_git.api.replies import ApiError, ok
from rivetr_git.models import App, Deployment
from rivetr_git.pipeline.deployer import Job
from rivetr_git.pipeline.git_source import GitSources
from rivetr_git.store.database import Store

PREFIX = "/api/v1"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # below PREFIX
    summary: str
    handler: str  # the name of the V1 method that answers
    changes: bool = False  # refused to read-only tokens


ROUTES: tuple[Route, ...] = (
    Route("GET", "/apps", "apps the token may see, with what is live", "apps_list"),
    Route("POST", "/apps", "create an app {name, git?, branch?} (admin)", "apps_create", True),
    Route("GET", "/apps/{app}", "one app: settings, git source, live release", "apps_info"),
    Route("DELETE", "/apps/{app}", "destroy an app (admin)", "apps_destroy", True),
    Route("GET", "/apps/{app}/deploys", "deployments, newest first", "deploys_list"),
    Route(
        "POST", "/apps/{app}/deploys", "fetch {ref?} from the git host and deploy", "deploy", True
    ),
    Route("GET", "/apps/{app}/deploys/{id}", "one deployment", "deploys_one"),
    Route(
        "GET",
        "/apps/{app}/deploys/{id}/log",
        "its log; Accept: text/event-stream follows a running deploy to its result",
        "deploys_log",
    ),
    Route("GET", "/apps/{app}/releases", "releases rollback can run", "releases"),
    Route("POST", "/apps/{app}/rollback", "run release {release?} again", "rollback", True),
    Route("GET", "/apps/{app}/config", "env var names (?reveal=true: values)", "config"),
    Route("GET", "/apps/{app}/domains", "hostnames the app is served on", "domains"),
    Route("POST", "/apps/{app}/domains", "add hostnames {hosts: [...]}", "domains_add", True),
    Route("DELETE", "/apps/{app}/domains/{host}", "remove a hostname", "domains_remove", True),
    Route("POST", "/apps/{app}/scale", "containers per process type {web: 2}", "scale", True),
    Route("POST", "/apps/{app}/restart", "a fresh container of the live release", "restart", True),
    Route("POST", "/apps/{app}/stop", "stop the app (503 until start)", "stop", True),
    Route("POST", "/apps/{app}/start", "start a stopped app", "start", True),
)


class _Capture:
    """An admin verb's output as lines, for the JSON answer."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def out(self, line: str) -> None:
        self.lines.append(line)

    async def out_bytes(self, data: bytes) -> None:
        self.lines.extend(data.decode("utf-8", "replace").splitlines())

    async def read_input(self, limit: int) -> bytes:
        return b""


def deployment_json(d: Deployment) -> dict[str, Any]:
    return dataclasses.asdict(d)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError:
        raise ApiError(400, "invalid", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid", "the body must be a JSON object")
    return data


class V1:
    def __init__(
        self,
        store: Store,
        admin: Admin,
        sources: GitSources,
        auth: Auth,
        app_url: Callable[[str], str],
        job_of: Callable[[int], Job | None],
    ) -> None:
        self._store = store
        self._admin = admin
        self._sources = sources
        self._auth = auth
        self._app_url = app_url
        self._job_of = job_of

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for route in ROUTES:
            router.add_route(route.method, PREFIX + route.path, self._answer(route))

    def _answer(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        method: Callable[[web.Request, Caller], Awaitable[web.StreamResponse]]
        method = getattr(self, route.handler)

        async def answer(request: web.Request) -> web.StreamResponse:
            caller = await self._auth.caller(request)
            if route.changes and caller.token is not None and caller.token.read_only:
                raise ApiError(403, "read_only", "this token is read-only")
            return await method(request, caller)

        return answer

    async def _app(self, request: web.Request, caller: Caller) -> App:
        return await visible_app(self._store, request.match_info["app"], caller)

    async def _verb(self, caller: Caller, *argv: str, status: int = 200) -> web.Response:
        """Run an admin verb as the caller; its output lines, or 422 with them."""
        capture = _Capture()
        code = await self._admin.run(list(argv), caller, capture)
        if code != 0:
            message = capture.lines[-1] if capture.lines else f"{argv[0]} failed"
            return ok(
                {"error": {"code": "failed", "message": message}, "output": capture.lines},
                status=422,
            )
        return ok({"output": capture.lines}, status=status)

    # --- apps --------------------------------------------------------------------------------

    async def apps_list(self, request: web.Request, caller: Caller) -> web.Response:
        apps = [a for a in await self._store.list_apps() if await caller.may_see(self._store, a)]
        current = await self._store.current_deployments()
        found = []
        for app in apps:
            live = current.get(app.id)
            found.append(
                {
                    "name": app.name,
                    "url": self._app_url(app.name),
                    "stopped": app.stopped,
                    "live": None if live is None else {"id": live.id, "commit": live.commit_sha},
                }
            )
        return ok({"apps": found})

    async def apps_create(self, request: web.Request, caller: Caller) -> web.Response:
        body = await _body(request)
        name = body.get("name")
        if not isinstance(name, str):
            raise ApiError(400, "invalid", 'give the app\'s name: {"name": "web"}')
        argv = ["apps:create", name]
        for key in ("git", "branch"):
            if isinstance(body.get(key), str):
                argv += [f"--{key}", body[key]]
        return await self._verb(caller, *argv, status=201)

    async def apps_info(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        live = await self._store.current_deployment(app)
        source = await self._store.git_source(app)
        return ok(
            {
                **dataclasses.asdict(app),
                "url": self._app_url(app.name),
                "deploy_branch": self._sources.branch_of(app),
                "domains": await self._store.domains(app),
                "git": None if source is None else {"url": source.url},
                "live": None if live is None else deployment_json(live),
            }
        )

    async def apps_destroy(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        return await self._verb(caller, "apps:destroy", app.name, "--confirm", app.name)

    # --- deploys -----------------------------------------------------------------------------

    async def deploys_list(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        found = await self._store.list_deployments(app)
        return ok({"deploys": [deployment_json(d) for d in found]})

    async def _deployment(self, request: web.Request, caller: Caller) -> Deployment:
        app = await self._app(request, caller)
        raw = request.match_info["id"]
        if not raw.isdigit():
            raise ApiError(400, "invalid", f"{raw!r} is not a deployment number")
        found = await self._store.get_deployment(int(raw))
        if found.app_id != app.id:
            raise ApiError(404, "not_found", f"{app.name} has no deployment #{raw}")
        return found

    async def deploys_one(self, request: web.Request, caller: Caller) -> web.Response:
        return ok(deployment_json(await self._deployment(request, caller)))

    async def deploys_log(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        found = await self._deployment(request, caller)
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await stream_log(request, self._store, found, self._job_of(found.id))
        lines = await self._store.get_logs(found.id)
        return ok({"lines": [dataclasses.asdict(line) for line in lines]})

    async def deploy(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        ref = (await _body(request)).get("ref")
        if ref is not None and not isinstance(ref, str):
            raise ApiError(400, "invalid", "ref is a branch, tag or commit sha")
        fetched = _Capture()
        job = await self._sources.fetch_and_submit(app, ref, caller.name, fetched.out)
        path = f"{PREFIX}/apps/{app.name}/deploys/{job.deployment.id}"
        return ok(
            {"deployment": deployment_json(job.deployment), "log": path + "/log"},
            status=202,
        )

    async def releases(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        live = await self._store.current_deployment(app)
        return ok(
            {
                "live": None if live is None else live.id,
                "releases": [deployment_json(r) for r in await self._store.releases(app)],
            }
        )

    async def rollback(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        release = (await _body(request)).get("release")
        extra = [] if release is None else [str(release)]
        return await self._verb(caller, "rollback", app.name, *extra)

    # --- config, domains, processes ----------------------------------------------------------

    async def config(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        capture = _Capture()
        await self._admin.run(["config", app.name], caller, capture)
        names = [n for n in capture.lines if " " not in n]
        if request.query.get("reveal") not in ("1", "true"):
            return ok({"names": names})
        if caller.token is not None and caller.token.read_only:
            raise ApiError(403, "read_only", "a read-only token cannot reveal values")
        values = {}
        for name in names:
            one = _Capture()
            await self._admin.run(["config:get", app.name, name], caller, one)
            values[name] = "\n".join(one.lines)
        return ok({"names": names, "values": values})

    async def domains(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        return ok({"domains": await self._store.domains(app)})

    async def domains_add(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        hosts = (await _body(request)).get("hosts")
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
            raise ApiError(400, "invalid", 'give the hostnames: {"hosts": ["www.example.com"]}')
        return await self._verb(caller, "domains:add", app.name, *hosts)

    async def domains_remove(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        return await self._verb(caller, "domains:remove", app.name, request.match_info["host"])

    async def scale(self, request: web.Request, caller: Caller) -> web.Response:
        app = await self._app(request, caller)
        body = await _body(request)
        if not body or not all(isinstance(v, int) for v in body.values()):
            raise ApiError(400, "invalid", 'give counts per process type: {"web": 2}')
        return await self._verb(
            caller, "ps:scale", app.name, *(f"{k}={v}" for k, v in body.items())
        )

    async def restart(self, request: web.Request, caller: Caller) -> web.Response:
        return await self._verb(caller, "ps:restart", (await self._app(request, caller)).name)

    async def stop(self, request: web.Request, caller: Caller) -> web.Response:
        return await self._verb(caller, "ps:stop", (await self._app(request, caller)).name)

    async def start(self, request: web.Request, caller: Caller) -> web.Response:
        return await self._verb(caller, "ps:start", (await self._app(request, caller)).name)
