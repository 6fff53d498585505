"""The HTTP edge end to end, against the real daemon: signed webhooks from each host that
deploy (or say why not), the JSON API with scoped and read-only tokens, a deploy's live log
as Server-Sent Events, and /metrics parsed by prometheus_client's own parser."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.git_host import GitHttpHost, make_source_repo
from tests.helpers import Key, Server, wait_until
from tests.test_admin_verbs import ok

TOKEN = "ghp-api-test-token"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHttpHost]:
    root = tmp_path_factory.mktemp("githost")
    for name in ("ghhook", "ghapi1", "ghapi2"):
        make_source_repo(root, name, branches=("main", "dev"))
    with GitHttpHost(root, TOKEN) as served:
        yield served


def request(
    server: Server,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.api_port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def git_app(server: Server, alice: Key, host: GitHttpHost, name: str) -> None:
    ok(server, alice, "apps:create", name, "--git", host.url(name))
    ok(server, alice, "git:set", name, f"token={TOKEN}")


def hook(
    server: Server, kind: str, app: str, secret: str, payload: dict[str, Any], **extra: str
) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    delivery = extra.pop("delivery", str(uuid.uuid4()))
    headers = {
        "github": {
            "X-GitHub-Event": extra.pop("event", "push"),
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": "sha256=" + signature,
        },
        "gitlab": {
            "X-Gitlab-Event": extra.pop("event", "Push Hook"),
            "X-Gitlab-Token": secret,
            "X-Gitlab-Event-UUID": delivery,
        },
        "gitea": {
            "X-Gitea-Event": extra.pop("event", "push"),
            "X-Gitea-Delivery": delivery,
            "X-Gitea-Signature": signature,
        },
    }[kind]
    return request(server, "POST", f"/hooks/{kind}/{app}", body, {**headers, **extra})


def push_payload(ref: str = "refs/heads/main", message: str = "update") -> dict[str, Any]:
    sha = "c" * 40
    return {
        "ref": ref,
        "before": "0" * 40,
        "after": sha,
        "head_commit": {"id": sha, "message": message},
        "commits": [{"id": sha, "message": message}],
    }


def test_webhooks_deploy_only_signed_pushes_to_the_branch(
    server: Server, keys: dict[str, Key], host: GitHttpHost
) -> None:
    alice = keys["alice"]
    git_app(server, alice, host, "ghhook")
    out = ok(server, alice, "git:webhook", "ghhook")
    secret = re.search(r"secret: (\w+)", out).group(1)  # type: ignore[union-attr]
    assert "/hooks/github/ghhook" in out and "/hooks/gitlab/ghhook" in out

    assert hook(server, "github", "ghhook", "wrong", push_payload())[0] == 401
    assert hook(server, "github", "nosuchapp", secret, push_payload())[0] == 401
    assert hook(server, "github", "ghhook", secret, {}, event="ping")[0] == 200
    for kind in ("github", "gitlab", "gitea"):
        status, body = hook(server, kind, "ghhook", secret, push_payload("refs/heads/dev"))
        assert (status, body["result"]) == (202, "ignored") and "dev is not main" in body["reason"]
    status, body = hook(server, "gitlab", "ghhook", secret, push_payload("refs/tags/v1"))
    assert status == 202 and "not a branch" in body["reason"]
    status, body = hook(server, "github", "ghhook", secret, push_payload(message="x [skip deploy]"))
    assert status == 202 and "skip deploy" in body["reason"]
    big = b"{" + b" " * (1 << 20) + b"}"
    assert request(server, "POST", "/hooks/github/ghhook", big)[0] == 413
    assert server.statuses("ghhook") == []  # nothing above deployed

    status, body = hook(server, "gitea", "ghhook", secret, push_payload(), delivery="d-1")
    assert (status, body["result"]) == (202, "deploying")
    assert wait_until(lambda: server.get("ghhook")[0] == 200, 60)
    assert server.get("ghhook") == (200, "ghhook from the git host\n")
    status, body = hook(server, "gitea", "ghhook", secret, push_payload(), delivery="d-1")
    assert status == 202 and "received before" in body["reason"]
    assert wait_until(lambda: server.statuses("ghhook") == ["running"], 30)

    rotated = ok(server, alice, "git:webhook", "ghhook", "--rotate")
    assert secret not in rotated
    assert hook(server, "github", "ghhook", secret, push_payload("refs/heads/dev"))[0] == 401


def test_api_tokens_scope_read_only_sse_and_metrics(
    server: Server, keys: dict[str, Key], host: GitHttpHost
) -> None:
    alice = keys["alice"]
    git_app(server, alice, host, "ghapi1")
    git_app(server, alice, host, "ghapi2")
    admin = ok(server, alice, "tokens:create", "ghadmin").splitlines()[0]
    scoped = ok(server, alice, "tokens:create", "ghdev", "--app", "ghapi1").splitlines()[0]
    reader = ok(server, alice, "tokens:create", "ghro", "--read-only").splitlines()[0]
    listed = ok(server, alice, "tokens:list")
    assert "ghdev" in listed and "read-only" in listed and scoped not in listed

    assert request(server, "GET", "/api/v1/apps")[0] == 401
    names = [
        a["name"] for a in request(server, "GET", "/api/v1/apps", None, bearer(admin))[1]["apps"]
    ]
    assert {"ghapi1", "ghapi2"} <= set(names)
    status, body = request(server, "GET", "/api/v1/apps", None, bearer(scoped))
    assert [a["name"] for a in body["apps"]] == ["ghapi1"]
    status, body = request(server, "GET", "/api/v1/apps/ghapi2", None, bearer(scoped))
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert request(server, "POST", "/api/v1/apps/ghapi2/stop", {}, bearer(scoped))[0] == 404
    status, body = request(server, "POST", "/api/v1/apps/ghapi1/deploys", {}, bearer(reader))
    assert (status, body["error"]["code"]) == (403, "read_only")
    status, body = request(server, "POST", "/api/v1/apps", {"name": "ghnew"}, bearer(scoped))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = request(server, "GET", "/api/v1/apps/ghapi1", None, bearer(reader))
    assert status == 200 and body["git"]["url"] == host.url("ghapi1")

    # A fetch that fails: the advice as a JSON error, and a failed deploy in the metrics.
    status, body = request(
        server, "POST", "/api/v1/apps/ghapi2/deploys", {"ref": "nope"}, bearer(admin)
    )
    assert (status, body["error"]["code"]) == (422, "deploy_failed")
    assert "its branches: dev, main" in body["error"]["message"]
    # A deploy started through the API, followed live to its end as Server-Sent Events.
    status, body = request(server, "POST", "/api/v1/apps/ghapi1/deploys", {}, bearer(scoped))
    assert status == 202, body
    events = read_events(server, body["log"], scoped)
    assert any("-----> Building" in data for event, data in events if event == "message")
    event, data = events[-1]
    assert event == "result" and json.loads(data)["status"] == "running"
    assert server.get("ghapi1") == (200, "ghapi1 from the git host\n")
    deployment = json.loads(data)["id"]
    status, one = request(
        server, "GET", f"/api/v1/apps/ghapi1/deploys/{deployment}", None, bearer(scoped)
    )
    assert one["status"] == "running"
    status, body = request(server, "GET", "/api/v1/apps/ghapi1/releases", None, bearer(reader))
    assert body["live"] == deployment
    status, body = request(
        server, "POST", "/api/v1/apps/ghapi1/domains", {"hosts": ["gh.example.com"]}, bearer(scoped)
    )
    assert status == 200, body
    status, body = request(server, "GET", "/api/v1/apps/ghapi1/domains", None, bearer(reader))
    assert body["domains"] == ["gh.example.com"]

    def scrape() -> dict[str, Any]:
        status, text = request(server, "GET", "/metrics")
        assert status == 200
        return {f.name: f for f in text_string_to_metric_families(text)}

    # Stage times are read from the stored log just after the deploy ends.
    assert wait_until(lambda: scrape()["rivetr_deploy_stage_seconds"].samples, 10)
    families = scrape()
    deploys = [
        s
        for s in families["rivetr_deploys"].samples
        if s.name == "rivetr_deploys_total" and s.labels == {"app": "ghapi1", "result": "running"}
    ]
    assert deploys and deploys[0].value >= 1
    failed = [
        s
        for s in families["rivetr_deploys"].samples
        if s.name == "rivetr_deploys_total" and s.labels == {"app": "ghapi2", "result": "failed"}
    ]
    assert failed and failed[0].value == 1
    stages = {s.labels.get("stage") for s in families["rivetr_deploy_stage_seconds"].samples}
    assert "building" in stages
    assert any(
        s.value >= 1
        for s in families["rivetr_push_to_live_seconds"].samples
        if s.name.endswith("_count")
    )

    def proxied() -> float:
        # Proxy worker processes report every second; the daemon sums them.
        family = scrape().get("rivetr_proxy_requests")
        found = [
            s.value
            for s in (family.samples if family else [])
            if s.labels == {"app": "ghapi1", "status_class": "2xx"}
        ]
        return found[0] if found else 0

    assert wait_until(lambda: proxied() >= 1, 10)  # the server.get() above
    families = scrape()
    latency = families["rivetr_proxy_request_seconds"].samples
    assert any(s.name.endswith("_count") and s.labels["app"] == "ghapi1" for s in latency)

    ok(server, alice, "tokens:revoke", "ghdev")
    assert request(server, "GET", "/api/v1/apps", None, bearer(scoped))[0] == 401
    for name in ("ghapi1", "ghapi2"):
        request(server, "DELETE", f"/api/v1/apps/{name}", None, bearer(admin))
    assert request(server, "GET", "/api/v1/apps/ghapi1", None, bearer(admin))[0] == 404


def read_events(server: Server, path: str, token: str) -> list[tuple[str, str]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.api_port}{path}",
        headers={**bearer(token), "Accept": "text/event-stream"},
    )
    events: list[tuple[str, str]] = []
    event, data = "message", []
    with urllib.request.urlopen(req, timeout=180) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif not line and data:
                events.append((event, "\n".join(data)))
                event, data = "message", []
    return events
