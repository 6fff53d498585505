"""Backing services end to end: real SSH, real daemon, real Docker, real Postgres/Redis/MariaDB
(local stand-ins for the official images, built by scripts/build-service-images).

An app on the clients image writes through DATABASE_URL / REDIS_URL and reads back across a
deploy, an app restart, a service restart and a server restart; the service is private until
exposed; an unlinked app cannot reach it; backup, destroy the data, restore.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.helpers import AppRepo, Key, Server, run, ssh_command, wait_until
from tests.test_admin_verbs import fails, ok, verb

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "rivetr-standin/postgres:15"
REDIS = "rivetr-standin/redis:7"
MARIADB = "rivetr-standin/mariadb:10.11"
CLIENTS = "rivetr-standin/app-clients:1"

APP_DOCKERFILE = f"""\
FROM {CLIENTS}
COPY app.py /app.py
EXPOSE 5000
CMD ["python3", "/app.py"]
"""
# /pg?put=V adds a row, /pg lists them; /redis?put=V sets a key, /redis reads it; /mysql as
# /pg; /reach?host=H&port=P says whether a TCP connection opens.
APP_PY = """\
import http.server, os, socket, urllib.parse

def pg(put):
    import psycopg2
    with psycopg2.connect(os.environ["DATABASE_URL"]) as c, c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS t (v text)")
        if put:
            cur.execute("INSERT INTO t VALUES (%s)", (put,))
        cur.execute("SELECT v FROM t ORDER BY v")
        return ",".join(r[0] for r in cur.fetchall())

def mysql(put):
    import pymysql
    u = urllib.parse.urlparse(os.environ["DATABASE_URL"])
    c = pymysql.connect(host=u.hostname, port=u.port, user=u.username, password=u.password,
                        database=u.path[1:], autocommit=True)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS t (v varchar(100))")
        if put:
            cur.execute("INSERT INTO t VALUES (%s)", (put,))
        cur.execute("SELECT v FROM t ORDER BY v")
        return ",".join(r[0] for r in cur.fetchall())

def rd(put):
    import redis
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    if put:
        r.set("k", put)
    return (r.get("k") or b"").decode()

def reach(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return "open"
    except OSError as e:
        return "closed " + type(e).__name__

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        try:
            if u.path == "/pg": body = pg(q.get("put"))
            elif u.path == "/mysql": body = mysql(q.get("put"))
            elif u.path == "/redis": body = rd(q.get("put"))
            elif u.path == "/reach": body = reach(q["host"], q["port"])
            else: body = "ok"
            code = 200
        except Exception as e:
            body, code = f"error {type(e).__name__}: {e}", 500
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body.encode())

http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", 5000))), H).serve_forever()
"""


@pytest.fixture(scope="module")
def service_images() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-service-images")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def sv_server(
    docker_engine: None,
    service_images: None,
    tmp_path_factory: pytest.TempPathFactory,
    keys: dict[str, Key],
) -> Iterator[Server]:
    yield from running_server(
        tmp_path_factory.mktemp("sv") / "data",
        keys,
        env={
            "RIVETR_POSTGRES_IMAGE": POSTGRES,
            "RIVETR_REDIS_IMAGE": REDIS,
            "RIVETR_MARIADB_IMAGE": MARIADB,
        },
    )


def db_app(path: Path, key: Key) -> AppRepo:
    repo = AppRepo(path, key, APP_DOCKERFILE)
    repo.write("app.py", APP_PY)
    repo.commit("db app")
    return repo


def deploy(server: Server, repo: AppRepo, app: str) -> None:
    result = repo.push(server.remote(app))
    assert result.returncode == 0, result.stderr


def get(server: Server, app: str, path: str) -> str:
    status, body = server.get(app, path, timeout=15)
    assert status == 200, body
    return body


def container_of(server: Server, name: str) -> str:
    return f"rivetr-{server.instance}.svc.{name}"


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_postgres_linked_private_backed_up(
    sv_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv, alice = sv_server, keys["alice"]
    out = ok(srv, alice, "services:create", "postgres", "svdb")
    assert "healthy" in out
    assert "ready to accept connections" in ok(srv, alice, "services:logs", "svdb")
    # Name clashes and bad input.
    assert "already exists" in fails(srv, alice, "services:create", "redis", "svdb")
    assert "unknown service kind" in fails(srv, alice, "services:create", "oracle", "svx")
    assert "cannot be pulled" in fails(
        srv, alice, "services:create", "postgres", "svx", "--version", "99-nope"
    )
    assert "svx" not in ok(srv, alice, "services:list")  # nothing half-made
    repo = db_app(tmp_path / "app", alice)
    deploy(srv, repo, "svapp")
    assert "is the name of an app" in fails(srv, alice, "services:create", "postgres", "svapp")
    assert "is the name of a service" in fails(srv, alice, "apps:create", "svdb")

    out = ok(srv, alice, "services:link", "svdb", "svapp")
    assert "DATABASE_URL" in out
    assert get(srv, "svapp", "/pg?put=a") == "a"
    info = ok(srv, alice, "services:info", "svdb")
    assert "postgres://rivetr:****@svdb:5432/svdb" in info and "svapp (DATABASE_URL)" in info
    assert "config" not in info and "****" in info

    # Private: not published; an app that is not linked cannot reach it by name.
    ports = run(["docker", "port", container_of(srv, "svdb")], check=False).stdout
    assert ports.strip() == ""
    other = db_app(tmp_path / "other", alice)
    deploy(srv, other, "svother")
    assert get(srv, "svother", "/reach?host=svdb&port=5432").startswith("closed")
    assert get(srv, "svapp", "/reach?host=svdb&port=5432") == "open"

    # Survives a deploy, an app restart, a service restart, a server restart.
    repo.write("app.py", APP_PY + "# v2\n")
    repo.commit("v2")
    deploy(srv, repo, "svapp")
    assert get(srv, "svapp", "/pg?put=b") == "a,b"
    ok(srv, alice, "ps:restart", "svapp")
    assert get(srv, "svapp", "/pg") == "a,b"
    run(["docker", "restart", container_of(srv, "svdb")])
    assert wait_until(lambda: srv.get("svapp", "/pg", timeout=5) == (200, "a,b"), 30)
    srv.stop()
    srv.start()
    assert wait_until(lambda: srv.get("svapp", "/pg?put=c", timeout=5)[0] == 200, 30)
    assert get(srv, "svapp", "/pg") == "a,b,c"

    # A killed service container is started again by the monitor.
    run(["docker", "kill", container_of(srv, "svdb")])
    assert wait_until(lambda: srv.get("svapp", "/pg", timeout=5) == (200, "a,b,c"), 30)

    # Expose on 127.0.0.1 only, then private again.
    out = ok(srv, alice, "services:expose", "svdb")
    port = int(out.split("127.0.0.1:")[1].split()[0])
    ports = run(["docker", "port", container_of(srv, "svdb")], check=False).stdout
    assert port_open(port), (out, ports)
    ok(srv, alice, "services:unexpose", "svdb")
    assert not port_open(port)
    assert get(srv, "svapp", "/pg") == "a,b,c"

    # Backup, lose the data, restore (refused while linked unless --force).
    out = ok(srv, alice, "services:backup", "svdb")
    backups = srv.data_dir / "backups" / "svdb"
    (made,) = [p for p in backups.iterdir()]
    assert made.name in out and made.stat().st_mode & 0o777 == 0o600
    assert made.read_bytes().startswith(b"PGDMP")
    assert get(srv, "svapp", "/pg?put=d") == "a,b,c,d"
    assert "--force" in fails(srv, alice, "services:restore", "svdb", made.name)
    ok(srv, alice, "services:restore", "svdb", made.name, "--force")
    assert get(srv, "svapp", "/pg") == "a,b,c"
    # Not a dump: refused, the data untouched.
    bad = verb(srv, alice, "services:import", "svdb", "--force", stdin="not a dump\n" * 10)
    assert bad.returncode != 0 and "is not a postgres dump" in bad.stderr
    assert get(srv, "svapp", "/pg") == "a,b,c"
    # Export and import over SSH, byte streams.
    dump = tmp_path / "svdb.dump"
    with dump.open("wb") as f:
        ssh = verb_argv(srv, alice, "services:export", "svdb")
        assert subprocess.run(ssh, stdout=f, timeout=60).returncode == 0
    assert dump.read_bytes().startswith(b"PGDMP")
    get(srv, "svapp", "/pg?put=e")
    with dump.open("rb") as f:
        ssh = verb_argv(srv, alice, "services:import", "svdb", "--force")
        assert subprocess.run(ssh, stdin=f, capture_output=True, timeout=60).returncode == 0
    assert get(srv, "svapp", "/pg") == "a,b,c"

    # Destroy: refused while linked; --force unlinks; the volume stays without --purge-data.
    assert "linked to svapp" in fails(srv, alice, "services:destroy", "svdb", "--confirm", "svdb")
    ok(srv, alice, "services:destroy", "svdb", "--confirm", "svdb", "--force", "--purge-data")
    assert "DATABASE_URL" not in ok(srv, alice, "config", "svapp")
    assert run(["docker", "inspect", container_of(srv, "svdb")], check=False).returncode != 0


def read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 20) -> bytes:
    """Output of `proc` until `marker` shows (or the time is up)."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            if b"\x1b[6n" in chunk and proc.stdin is not None:
                # A cursor position query (redis-cli asks when it starts before the pty has
                # its size): answer as a terminal would.
                proc.stdin.write(b"\x1b[24;1R")
                proc.stdin.flush()
    return seen


def verb_argv(server: Server, key: Key, *argv: str) -> list[str]:
    """ssh options first (e.g. -tt), then the verb: argv as ssh takes it."""
    options = [a for a in argv if a.startswith("-t")]
    rest = [a for a in argv if not a.startswith("-t")]
    return [
        *ssh_command(key.private).split(),
        *options,
        "-p",
        str(server.ssh_port),
        "git@127.0.0.1",
        *rest,
    ]


def test_redis_and_mariadb_linked_and_restored(
    sv_server: Server, keys: dict[str, Key], tmp_path: Path
) -> None:
    srv, alice = sv_server, keys["alice"]
    ok(srv, alice, "services:create", "redis", "svcache")
    ok(srv, alice, "services:create", "mariadb", "svmaria")
    repo = db_app(tmp_path / "app", alice)
    deploy(srv, repo, "svapp2")
    assert "REDIS_URL" in ok(srv, alice, "services:link", "svcache", "svapp2")
    assert "DATABASE_URL" in ok(srv, alice, "services:link", "svmaria", "svapp2")
    assert get(srv, "svapp2", "/redis?put=one") == "one"
    assert get(srv, "svapp2", "/mysql?put=x") == "x"
    ok(srv, alice, "services:backup", "svcache")
    ok(srv, alice, "services:backup", "svmaria")
    assert get(srv, "svapp2", "/redis?put=two") == "two"
    assert get(srv, "svapp2", "/mysql?put=y") == "x,y"
    ok(srv, alice, "services:restore", "svcache", "latest", "--force")
    ok(srv, alice, "services:restore", "svmaria", "latest", "--force")
    assert wait_until(lambda: srv.get("svapp2", "/redis", timeout=5) == (200, "one"), 30)
    assert get(srv, "svapp2", "/mysql") == "x"
    run(["docker", "restart", container_of(srv, "svcache")])
    assert wait_until(lambda: srv.get("svapp2", "/redis", timeout=5) == (200, "one"), 30)
    # A terminal on the service's client (ssh -t only), and the backup schedule.
    assert "ssh -t" in fails(srv, alice, "services:connect", "svcache")
    console = subprocess.Popen(
        [*verb_argv(srv, alice, "-tt"), "services:connect svcache"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert b"6379>" in read_until(console, b"6379>")  # redis-cli's prompt
        assert console.stdin is not None
        console.stdin.write(b"ping\r")
        console.stdin.flush()
        seen = read_until(console, b"PONG")
        assert b"PONG" in seen
        if b"6379>" not in seen.partition(b"PONG")[2]:
            # The next prompt: typing before it would feed redis-cli's cursor query.
            read_until(console, b"6379>")
        console.stdin.write(b"quit\r")
        console.stdin.flush()
        read_until(console, b"\0 the end", timeout=20)  # to the end, answering queries
        assert console.wait(timeout=5) == 0
    finally:
        console.kill()
        console.wait()
    assert "not a cron schedule" in fails(
        srv, alice, "services:backup", "svcache", "--schedule", "x"
    )
    ok(srv, alice, "services:backup", "svcache", "--schedule", "0 3 * * *", "--keep", "3")
    assert "schedule 0 3 * * *, keep 3" in ok(srv, alice, "services:info", "svcache")
    assert "--confirm" in fails(srv, alice, "services:destroy", "svcache")
    # Destroying a linked app unlinks it (the services leave its network first).
    ok(srv, alice, "apps:destroy", "svapp2", "--confirm", "svapp2")
    assert "svapp2" not in ok(srv, alice, "services:list")
    for name in ("svcache", "svmaria"):
        ok(srv, alice, "services:destroy", name, "--confirm", name, "--purge-data")
