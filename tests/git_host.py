"""A real git host on loopback for the git-host tests: `git http-backend` (git's own CGI)
behind a small HTTP server that checks a token, and bare repos served over SSH by an
asyncssh server that lets in one deploy key. Both run in a thread of the test process."""

from __future__ import annotations

import asyncio
import base64
import os
import shlex
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncssh

from tests.helpers import BUSYBOX, GIT_ENV, HTTPD_DOCKERFILE

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"


class GitHttpHost:
    """Serves ROOT/*.git over smart HTTP; repos not in `public` need Basic auth whose
    password is `token`."""

    def __init__(self, root: Path, token: str, public: set[str] | None = None) -> None:
        self.root = root
        self.token = token
        self.public = public or set()
        self.requests = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                host.serve(self)

            def do_POST(self) -> None:
                host.serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, repo: str, user: str = "") -> str:
        return f"http://{user + '@' if user else ''}127.0.0.1:{self.port}/{repo}.git"

    def authorised(self, handler: BaseHTTPRequestHandler, repo: str) -> bool:
        if repo in self.public:
            return True
        header = handler.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return password == self.token

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        self.requests += 1
        path, _, query = handler.path.partition("?")
        repo = path.lstrip("/").split(".git", 1)[0]
        if not self.authorised(handler, repo):
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="git"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": handler.command,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "test",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": handler.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": handler.headers.get("Content-Encoding", ""),
        }
        out = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def __enter__(self) -> GitHttpHost:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _SshGit(asyncssh.SSHServer):
    def __init__(self, authorised: list[str]) -> None:
        self._keys = [asyncssh.import_public_key(k) for k in authorised]

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return any(k.public_data == key.public_data for k in self._keys)


@contextmanager
def ssh_git_host(root: Path, authorised: list[str], known_hosts: Path) -> Iterator[int]:
    """An SSH server on loopback that runs git-upload-pack on ROOT/<repo>.git for the
    authorised keys; its host key is written to `known_hosts`. Yields its port."""
    loop = asyncio.new_event_loop()
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        argv = shlex.split(process.command or "")
        if len(argv) != 2 or argv[0] != "git-upload-pack":
            process.exit(1)
            return
        repo = root / argv[1].strip("/")
        git = subprocess.Popen(
            ["git-upload-pack", str(repo)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert git.stdin is not None and git.stdout is not None
        stdin, stdout = git.stdin, git.stdout

        async def pump_in() -> None:
            while data := await process.stdin.read(65536):
                await asyncio.to_thread(stdin.write, data)
                await asyncio.to_thread(stdin.flush)

        feeder = asyncio.create_task(pump_in())
        while data := await asyncio.to_thread(os.read, stdout.fileno(), 65536):
            process.stdout.write(data)
            await process.stdout.drain()
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        stdin.close()
        process.exit(await asyncio.to_thread(git.wait))

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            server_factory=lambda: _SshGit(authorised),
            process_factory=handle,
            encoding=None,
        )

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    line = host_key.export_public_key("openssh").decode().strip()
    known_hosts.write_text(f"[127.0.0.1]:{port} {line}\n")
    try:
        yield port
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def make_source_repo(root: Path, name: str, branches: tuple[str, ...] = ("main",)) -> Path:
    """A bare repo ROOT/NAME.git with a commit (a busybox httpd app) on each branch."""
    work = root / f"{name}-work"
    work.mkdir(parents=True)
    env = {**os.environ, **GIT_ENV}

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
        ).stdout

    git("init", "-q", "-b", branches[0])
    (work / "busybox").write_bytes(BUSYBOX.read_bytes())
    (work / "busybox").chmod(0o755)
    (work / "Dockerfile").write_text(HTTPD_DOCKERFILE)
    (work / "www").mkdir()
    (work / "www" / "index.html").write_text(f"{name} from the git host\n")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    git("commit", "-q", "--allow-empty", "-m", "second")
    for branch in branches[1:]:
        git("branch", branch)
    bare = root / f"{name}.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    return work
