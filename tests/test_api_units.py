"""The HTTP edge without Docker: webhook signatures and payloads in each host's documented
shape, the OpenAPI document against the routes served, token auth and its rate limit."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from rivetr_git.admin.dispatch import Caller
from rivetr_git.admin.git_verbs import token_digest
from rivetr_git.api.auth import Auth
from rivetr_git.api.openapi import document
from rivetr_git.api.replies import json_errors, ok
from rivetr_git.api.v1 import PREFIX, ROUTES, V1
from rivetr_git.api.webhooks import parse, verify
from rivetr_git.store.database import Store

SECRET = "0f" * 32
SHA = "a" * 40

# Trimmed from the hosts' documentation (GitHub "push" event, GitLab "Push Hook",
# Gitea push webhook): the fields rivetr-git reads, in their places.
GITHUB_PUSH = {
    "ref": "refs/heads/main",
    "before": "0" * 40,
    "after": SHA,
    "created": False,
    "deleted": False,
    "forced": False,
    "repository": {"full_name": "octo/hello", "clone_url": "https://github.com/octo/hello.git"},
    "pusher": {"name": "octo"},
    "head_commit": {"id": SHA, "message": "Update README [skip deploy]", "timestamp": "x"},
    "commits": [{"id": SHA, "message": "Update README [skip deploy]"}],
}
GITLAB_PUSH = {
    "object_kind": "push",
    "event_name": "push",
    "before": "0" * 40,
    "after": SHA,
    "ref": "refs/heads/main",
    "checkout_sha": SHA,
    "project": {"path_with_namespace": "mike/diaspora"},
    "commits": [
        {"id": "b" * 40, "message": "older"},
        {"id": SHA, "message": "fixed readme"},
    ],
    "total_commits_count": 2,
}
GITEA_PUSH = {
    "ref": "refs/heads/develop",
    "before": "0" * 40,
    "after": SHA,
    "compare_url": "http://localhost:3000/gitea/webhooks/compare/x...y",
    "commits": [{"id": SHA, "message": "Update README", "url": "u"}],
    "head_commit": {"id": SHA, "message": "Update README"},
    "repository": {"full_name": "gitea/webhooks"},
    "pusher": {"login": "gitea"},
}


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_github_signature_and_push() -> None:
    body = json.dumps(GITHUB_PUSH).encode()
    headers = CIMultiDict(
        {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "X-Hub-Signature-256": "sha256=" + sign(body),
        }
    )
    assert verify("github", SECRET, body, headers)
    assert not verify("github", SECRET, body + b" ", headers)  # the raw body is signed
    assert not verify("github", "another", body, headers)
    assert not verify("github", SECRET, body, CIMultiDict())
    hook = parse("github", body, headers)
    assert (hook.event, hook.ref, hook.after) == ("push", "refs/heads/main", SHA)
    assert hook.delivery == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert "[skip deploy]" in hook.message
    ping = parse("github", b"{}", CIMultiDict({"X-GitHub-Event": "ping"}))
    assert ping.event == "ping"


def test_gitlab_token_and_push_head_commit() -> None:
    body = json.dumps(GITLAB_PUSH).encode()
    headers = CIMultiDict(
        {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET, "X-Gitlab-Event-UUID": "u-1"}
    )
    assert verify("gitlab", SECRET, body, headers)
    assert not verify("gitlab", SECRET, body, CIMultiDict({"X-Gitlab-Token": "nope"}))
    hook = parse("gitlab", body, headers)
    assert (hook.event, hook.after, hook.message, hook.delivery) == (
        "push",
        SHA,
        "fixed readme",
        "u-1",
    )
    tag = parse("gitlab", body, CIMultiDict({"X-Gitlab-Event": "Tag Push Hook"}))
    assert tag.event == "tag_push"


def test_gitea_and_forgejo_signatures() -> None:
    body = json.dumps(GITEA_PUSH).encode()
    gitea = CIMultiDict({"X-Gitea-Event": "push", "X-Gitea-Signature": sign(body)})
    forgejo = CIMultiDict({"X-Forgejo-Event": "push", "X-Forgejo-Signature": sign(body)})
    assert verify("gitea", SECRET, body, gitea) and verify("gitea", SECRET, body, forgejo)
    assert not verify("gitea", SECRET, body, CIMultiDict({"X-Gitea-Signature": sign(b"x")}))
    hook = parse("gitea", body, forgejo)
    assert (hook.event, hook.ref, hook.message) == ("push", "refs/heads/develop", "Update README")


def test_the_openapi_document_describes_exactly_the_routes_served() -> None:
    app = web.Application()
    fake: Any = None  # registering routes touches none of them
    V1(fake, fake, fake, fake, fake, fake).add_routes(app.router)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    doc = document("test")
    described = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert served == described
    assert len(described) == len(ROUTES) and all(p.startswith(PREFIX) for _, p in described)
    for ops in doc["paths"].values():
        for op in ops.values():
            assert op["summary"] and "401" in op["responses"]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "db.sqlite")
    yield opened
    await opened.close()


async def test_token_auth_scopes_and_rate_limit(store: Store) -> None:
    await store.create_api_token("ci", token_digest("rvt_good"), ["ghone"], read_only=True)
    auth = Auth(store, max_failures=3, window=60)
    seen: list[Caller] = []

    async def whoami(request: web.Request) -> web.Response:
        caller = await auth.caller(request)
        seen.append(caller)
        return ok({"name": caller.name})

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/who", whoami)
    async with TestClient(TestServer(app)) as client:
        good = await client.get("/who", headers={"Authorization": "Bearer rvt_good"})
        assert good.status == 200 and (await good.json()) == {"name": "token ci"}
        token = seen[0].token
        assert token is not None and token.apps == ("ghone",) and token.read_only
        assert not seen[0].is_admin
        for header in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
            bad = await client.get("/who", headers=header)
            assert bad.status == 401
            assert (await bad.json())["error"]["code"] == "unauthorized"
        limited = await client.get("/who", headers={"Authorization": "Bearer rvt_good"})
        assert limited.status == 429
        assert (await limited.json())["error"]["code"] == "rate_limited"
        missing = await client.get("/nothing-here")
        assert (await missing.json())["error"]["code"] == "no_such_route"
    [stored] = await store.api_tokens()
    assert stored.last_used is not None
    assert stored.name == "ci"  # and only the hash is stored:
    assert await store.api_token_by_hash("rvt_good") is None


@pytest.mark.parametrize(
    ("api_host", "open_without_token"), [("127.0.0.1", True), ("0.0.0.0", False)]
)
async def test_metrics_need_a_token_unless_bound_to_loopback(
    store: Store, api_host: str, open_without_token: bool
) -> None:
    from rivetr_git.api.metrics import Metrics
    from rivetr_git.api.server import ApiServer
    from rivetr_git.settings import Settings

    await store.create_api_token("scraper", token_digest("rvt_scrape"), None, read_only=True)
    fake: Any = None  # the metrics route touches neither the verbs nor the git sources
    metrics = Metrics(store, {"ghm": 2}, lambda: {})
    api = ApiServer(
        Settings(api_host=api_host), store, fake, fake, metrics, lambda a: "", lambda i: None
    )
    async with TestClient(TestServer(api.app)) as client:
        bare = await client.get("/metrics")
        assert (bare.status == 200) is open_without_token
        good = await client.get("/metrics", headers={"Authorization": "Bearer rvt_scrape"})
        assert good.status == 200
        assert 'rivetr_container_restarts{app="ghm"} 2.0' in await good.text()
        doc = await client.get("/api/v1/openapi.json")
        assert (await doc.json())["openapi"].startswith("3.")
    await metrics.close()


async def test_a_taken_api_port_is_a_config_error(store: Store) -> None:
    import socket

    from rivetr_git.api.metrics import Metrics
    from rivetr_git.api.server import ApiServer
    from rivetr_git.errors import ConfigError
    from rivetr_git.settings import Settings

    fake: Any = None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(api_host="127.0.0.1", api_port=port)
        metrics = Metrics(store, {}, lambda: {})
        api = ApiServer(settings, store, fake, fake, metrics, lambda a: "", lambda i: None)
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await api.start()
        await api.close()
