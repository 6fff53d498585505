"""Deploys from a git host and the HTTP API: webhook-to-live next to `git push`, and API
requests per second.

What it measures
----------------
A throwaway `rivetr-git serve` (own temp data dir, ports picked by the OS) and a git host on
loopback (`git http-backend` behind a token-checking HTTP server, tests/git_host.py) holding
the busybox app. Two apps serve the same repository:

* ghwebhook: created with `--git URL` and a token; deployed by a signed GitHub-format push
  webhook (POST /hooks/github/ghwebhook). Measured from the POST to the first 200 carrying
  the new content through rivetr's proxy (polled every 10 ms): the fetch from the host,
  then the pipeline.
* ghpush: the same commit pushed with `git push` over SSH, measured from the start of the
  push to the first 200 with the new content (as bench/push_to_live.py does).

Every round commits new page text to the host's repository (untimed) and deploys that one
commit both ways, the order alternating per round (the second build of identical content
reuses Docker's layer cache either way). The summary gives medians and the ratio
webhook/push (target <= 1.2).

Then 100 apps are created through POST /api/v1/apps and GET /api/v1/apps (the list, with
each app's live release: one token lookup and 100+ rows) is requested by 16 concurrent
clients for --seconds; the baseline is GET /api/v1/openapi.json on the same server (no
token, no database), so the ratio shows what auth and the store cost.

Run from the project root:  .venv/bin/python bench/webhook_api.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import re
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
from harness import (
    RIVETR,
    AppRepo,
    BenchError,
    Server,
    bench_main,
    fmt_s,
    median,
    report_server_health,
    run,
    wait_for_content,
    workspace,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.git_host import GitHttpHost

TOKEN = "bench-host-token"


def cli(data_dir: Path, *argv: str) -> str:
    return run([RIVETR, "--data-dir", data_dir, *argv])


def api(port: int, method: str, path: str, token: str, body: object = None) -> object:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def post_webhook(port: int, app: str, secret: str) -> int:
    sha = "0" * 39 + "1"
    body = json.dumps(
        {"ref": "refs/heads/main", "after": sha, "head_commit": {"id": sha, "message": "x"}}
    ).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hooks/github/{app}",
        data=body,
        method="POST",
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256=" + signature,
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


async def load(url: str, headers: dict[str, str], seconds: float, clients: int = 16) -> float:
    """Requests per second that answered 200, `clients` at a time for `seconds`."""
    done = 0
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            async with session.get(url, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise BenchError(f"{url} answered {response.status}")
                done += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return done / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--apps", type=int, default=100)
    args = parser.parse_args()
    with workspace("rivetr-bench-webhook-") as server:
        server.start(settings={"RIVETR_API_PORT": "0", "RIVETR_WATCH_WINDOW": "1"})
        api_port = json.loads((server.data_dir / "daemon.json").read_text())["api_port"]
        hosted = server.workdir / "host"
        hosted.mkdir()
        source = AppRepo.create(server.workdir / "src", "round 0")
        run(["git", "clone", "-q", "--bare", source.path, hosted / "ghbench.git"])
        source.git("remote", "add", "host", str(hosted / "ghbench.git"))
        with GitHttpHost(hosted, TOKEN) as host:
            return measure(server, api_port, source, host, args)


def measure(
    server: Server, api_port: int, source: AppRepo, host: GitHttpHost, args: argparse.Namespace
) -> int:
    data = server.data_dir
    cli(data, "apps:create", "ghwebhook", "--git", host.url("ghbench"))
    cli(data, "git:set", "ghwebhook", f"token={TOKEN}")
    found = re.search(r"secret: (\w+)", cli(data, "git:webhook", "ghwebhook"))
    if found is None:
        raise BenchError("git:webhook printed no secret")
    secret = found.group(1)
    rows: list[tuple[float, float]] = []
    for round_no in range(args.rounds + 1):  # round 0 warms up (creates, fills the cache)
        content = f"round {round_no + 1} {uuid.uuid4().hex[:8]}"
        source.commit(content)
        source.git("push", "-q", "-f", "host", "main")
        times: dict[str, float] = {}
        order = ("webhook", "push") if round_no % 2 else ("push", "webhook")
        for way in order:
            started = time.monotonic()
            if way == "webhook":
                if post_webhook(api_port, "ghwebhook", secret) != 202:
                    raise BenchError("the webhook was not accepted")
                host_name = "ghwebhook.localhost"
            else:
                result = server.push(source, "ghpush")
                if result.returncode != 0:
                    raise BenchError("git push failed:\n" + "\n".join(result.output[-10:]))
                host_name = "ghpush.localhost"
            live = wait_for_content(server.proxy_port, host_name, content, started + 120)
            if live is None:
                raise BenchError(f"{way} of round {round_no} never went live")
            times[way] = live - started
        if round_no:
            rows.append((times["webhook"], times["push"]))
            print(
                f"round {round_no}: webhook-to-live {fmt_s(times['webhook'])}  "
                f"push-to-live {fmt_s(times['push'])}  (first: {order[0]})",
                flush=True,
            )
    webhook, push = median([r[0] for r in rows]), median([r[1] for r in rows])
    print(
        f"\nmedian webhook-to-live {fmt_s(webhook)}  push-to-live {fmt_s(push)}  "
        f"ratio {webhook / push:.2f} (target <= 1.2)"
    )
    # The one that goes first builds; the second reuses its layers: compare like with like.
    for position, first in (("first", 1), ("second", 0)):
        hook_at = median([r[0] for i, r in enumerate(rows, 1) if i % 2 == first])
        push_at = median([r[1] for i, r in enumerate(rows, 1) if i % 2 != first])
        print(
            f"  when {position}: webhook {fmt_s(hook_at)}  push {fmt_s(push_at)}  "
            f"ratio {hook_at / push_at:.2f}"
        )

    token = cli(data, "tokens:create", "bench").splitlines()[0]
    for n in range(args.apps):
        api(api_port, "POST", "/api/v1/apps", token, {"name": f"ghb{n:03d}"})
    listed = api(api_port, "GET", "/api/v1/apps", token)
    count = len(listed["apps"]) if isinstance(listed, dict) else 0
    auth = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{api_port}"
    apps_rate = asyncio.run(load(base + "/api/v1/apps", auth, args.seconds))
    doc_rate = asyncio.run(load(base + "/api/v1/openapi.json", {}, args.seconds))
    print(
        f"GET /api/v1/apps ({count} apps): {apps_rate:.0f} req/s; baseline GET "
        f"/api/v1/openapi.json: {doc_rate:.0f} req/s; ratio {apps_rate / doc_rate:.2f}"
    )
    report_server_health(server, expected_containers=2)
    return 0


if __name__ == "__main__":
    bench_main("webhook_api", main)
