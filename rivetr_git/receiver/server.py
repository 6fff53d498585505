"""The asyncssh server: public-key auth, one git command per session, relayed byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import asyncssh

from rivetr_git import validate
from rivetr_git.admin.service import Admin, Caller
from rivetr_git.admin.ssh_keys import fingerprint
from rivetr_git.errors import AccessDenied, NotFound, RivetrError, UsageHelp, ValidationError
from rivetr_git.models import App, SshKey
from rivetr_git.receiver.algorithms import algorithms
from rivetr_git.receiver.commands import AdminCommand, GitCommand, git_protocol, parse_command
from rivetr_git.receiver.console import SshTerminal
from rivetr_git.receiver.gate import ConnectionGate, GatedProtocol, GateLimits, gated_factory
from rivetr_git.receiver.hook_socket import HookSocket
from rivetr_git.receiver.redact import hide_command_arguments
from rivetr_git.receiver.relay import CHUNK, Traffic, pump_in, pump_out, wait_until_idle
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos

log = logging.getLogger(__name__)

HOST_KEY_FILE = "ssh_host_ed25519_key"
_EXTRA_KEY = "rivetr_key_fingerprint"
_EXTRA_GATE = "rivetr_gate"
# What index-pack / unpack-objects say when receive.maxInputSize stops a pack.
_TOO_BIG = b"pack exceeds maximum allowed size"


def load_host_key(data_dir: Path) -> asyncssh.SSHKey:
    """The server's host key: created once, then reused so clients' known_hosts stay valid."""
    path = data_dir / HOST_KEY_FILE
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key())
    (data_dir / (HOST_KEY_FILE + ".pub")).write_bytes(key.export_public_key())
    return key


def _ack_promptly(conn: asyncssh.SSHServerConnection) -> Callable[[], None]:
    """ACK every segment at once during the handshake; return a function that stops it.

    OpenSSH leaves Nagle on for non-interactive sessions (git): it holds its
    SERVICE_REQUEST until the server ACKs the NEWKEYS sent just before, and Linux delays
    that ACK by 40 ms or more. Setting TCP_QUICKACK after each read sends the ACK now:
    measured here, a whole `ssh host cmd` went from 55-95 ms to 10 ms. (This relies on
    asyncio's transport looking up data_received on each read; uvloop caches it, which is
    one reason the daemon runs on the default loop.)
    """
    sock = conn.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return lambda: None
    original = conn.data_received

    def data_received(data: bytes, datatype: int | None = None) -> None:
        original(data, datatype)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    conn.data_received = data_received  # type: ignore[method-assign]

    def restore() -> None:
        conn.data_received = original  # type: ignore[method-assign]

    return restore


class _Auth(asyncssh.SSHServer):
    """Per-connection auth. Identity is fixed only once a signed auth has completed.

    asyncssh calls validate_public_key both for the unsigned "would you accept this key?"
    probe and for the signed attempt, so a client can probe with someone else's public
    key. Only the key validated last before auth completes (the one that signed) counts.
    """

    def __init__(self, store: Store, max_tries: int, gate: ConnectionGate) -> None:
        self._store = store
        self._max_tries = max_tries
        self._tries = 0
        self._gate = gate
        self._conn: asyncssh.SSHServerConnection | None = None
        self._candidate: str | None = None
        self._restore_reads: Callable[[], None] = lambda: None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._restore_reads = _ack_promptly(conn)

    def begin_auth(self, username: str) -> bool:
        return True  # auth is always required

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Probes count too: otherwise one connection could test any number of keys.
        self._tries += 1
        if self._tries > self._max_tries:
            self._too_many_tries()
            return False
        fp = fingerprint(key)
        known = await self._store.key_by_fingerprint(fp) is not None
        self._candidate = fp if known else None
        return known

    def _too_many_tries(self) -> None:
        if self._conn is None:
            return
        gated: GatedProtocol | None = self._conn.get_extra_info(_EXTRA_GATE)
        self._gate.refusals.refused("over ssh_max_auth_tries", gated.source if gated else "unknown")
        self._conn.disconnect(
            asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
            f"too many authentication attempts (more than {self._max_tries} keys offered); "
            "use -o IdentitiesOnly=yes -i KEY",
        )

    def auth_completed(self) -> None:
        if self._conn is not None:
            self._conn.set_extra_info(**{_EXTRA_KEY: self._candidate})
            gated: GatedProtocol | None = self._conn.get_extra_info(_EXTRA_GATE)
            if gated is not None:
                gated.authenticated()
        self._restore_reads()


class Receiver:
    """Listens for SSH, authorizes each git command, runs git with the hooks pointed at us."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        repos: Repos,
        hooks: HookSocket,
        hooks_dir: Path,
        admin: Admin,
    ) -> None:
        self._settings = settings
        self._store = store
        self._repos = repos
        self._hooks = hooks
        self._hooks_dir = hooks_dir
        self._admin = admin
        self._server: asyncio.Server | None = None
        self.bound_port = settings.ssh_port
        # Checked here, so an unknown algorithm name stops start-up before anything runs.
        self._algorithms = algorithms(settings)
        self._max_push = validate.size(settings.max_push_size) if settings.max_push_size else 0
        self.gate = ConnectionGate(
            GateLimits(
                max_startups=settings.ssh_max_startups,
                max_startups_per_source=settings.ssh_max_startups_per_source,
                handshake_rate=settings.ssh_handshake_rate,
                handshake_burst=settings.ssh_handshake_burst,
            )
        )

    async def start(self) -> None:
        hide_command_arguments()
        s = self._settings
        options = asyncssh.SSHServerConnectionOptions(
            server_host_keys=[load_host_key(s.data_dir)],
            server_factory=lambda: _Auth(self._store, s.ssh_max_auth_tries, self.gate),
            process_factory=self._handle,
            encoding=None,
            allow_pty=True,  # consoles: run/enter on ssh -t
            x11_forwarding=False,
            agent_forwarding=False,
            allow_scp=False,
            line_editor=False,
            keepalive_interval=30,
            login_timeout=s.ssh_login_grace_time,
            **self._algorithms.as_options(),
        )
        loop = asyncio.get_running_loop()

        def make_conn(gated: GatedProtocol) -> asyncssh.SSHServerConnection:
            conn = asyncssh.SSHServerConnection(loop, options)
            conn.set_extra_info(**{_EXTRA_GATE: gated})
            return conn

        # Our own listener instead of asyncssh.listen: the gate sees each connection first.
        self._server = await loop.create_server(
            gated_factory(self.gate, make_conn), s.ssh_host, s.ssh_port, backlog=1024
        )
        self.bound_port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.gate.refusals.close()

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        try:
            status = await self._session(process)
        except RivetrError as exc:
            _say(process, f"rivetr: {exc}")
            status = exc.exit_code
        except Exception:
            log.exception("ssh session failed")
            _say(process, "rivetr: internal error; see the server log")
            status = 1
        with contextlib.suppress(Exception):  # the client may be gone already
            process.exit(status)

    async def _identity(self, process: asyncssh.SSHServerProcess[bytes]) -> SshKey:
        fp = process.get_extra_info(_EXTRA_KEY)
        # Checked against the database on every command: a removed key stops working at once.
        key = await self._store.key_by_fingerprint(fp) if fp else None
        if key is None:
            raise AccessDenied("your key is not (or no longer) registered with this server")
        return key

    async def _authorize(self, key: SshKey, command: GitCommand) -> App:
        app = await self._store.find_app(command.app)
        if app is not None and await self._store.has_access(key, app):
            return app
        if app is None and command.is_push and key.is_admin and self._settings.auto_create_apps:
            app = await self._store.create_app(command.app)
            await self._repos.create(app.name, self._settings.deploy_branch)
            return app
        # Someone else's app answers exactly like a missing one.
        raise NotFound(f"app '{command.app}' does not exist")

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> int:
        key = await self._identity(process)
        if process.subsystem:
            raise AccessDenied(f"subsystem {process.subsystem!r} is not available")
        command = parse_command(process.command)
        if isinstance(command, AdminCommand):
            return await self._run_admin(process, command, key)
        app = await self._authorize(key, command)
        if not self._repos.exists(app.name):
            await self._repos.create(app.name, self._settings.deploy_branch)
        if command.is_push:
            token, context = self._hooks.register(app, key.name)
            try:
                code = await self._run_git(
                    process, command, app, token, busy=lambda: context.deploying
                )
            finally:
                self._hooks.unregister(token)
            if code == 0 and context.ok is False:
                return 1  # receive-pack succeeded but the deploy did not: fail the push
            return code
        return await self._run_git(process, command, app, None)

    async def _run_admin(
        self, process: asyncssh.SSHServerProcess[bytes], command: AdminCommand, key: SshKey
    ) -> int:
        """Run an admin verb; stop it when the client goes away (Ctrl-C on `logs -f`)."""
        session = _SshSession(process)
        if process.get_terminal_type():
            session.terminal = SshTerminal(process)
        task = asyncio.create_task(self._admin.run(command.argv, Caller(key), session))
        gone = asyncio.create_task(process.channel.wait_closed())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            return 130  # the client went away; what it ran has been stopped
        except UsageHelp as exc:
            await session.out(str(exc))
            return 0

    def _git_env(
        self, process: asyncssh.SSHServerProcess[bytes], app: App, token: str | None
    ) -> dict[str, str]:
        # Nothing the client sent reaches git except a validated GIT_PROTOCOL.
        bindir = os.path.dirname(sys.executable)
        env = {
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self._settings.data_dir),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "LANG": "C.UTF-8",
            "RIVETR_DEPLOY_BRANCH": app.deploy_branch or self._settings.deploy_branch,
            "RIVETR_APP": app.name,
        }
        protocol = git_protocol(process.env.get("GIT_PROTOCOL"))
        if protocol:
            env["GIT_PROTOCOL"] = protocol
        if token is not None:
            env["RIVETR_HOOK_SOCKET"] = str(self._hooks.path)
            env["RIVETR_PUSH_TOKEN"] = token
        return env

    async def _run_git(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        command: GitCommand,
        app: App,
        token: str | None,
        busy: Callable[[], bool] = lambda: False,
    ) -> int:
        git = await self._start_git(process, command, app, token)
        seen = Traffic(_TOO_BIG)
        code = await self._relay(process, git, seen, app, busy)
        if code is None:
            return 1
        if seen.marked:
            _say(
                process,
                f"rivetr: this push is larger than the server's max_push_size "
                f"({self._settings.max_push_size}); nothing was stored. Push less (large "
                "files do not belong in the repository), or ask an admin to raise "
                "max_push_size (RIVETR_MAX_PUSH_SIZE; 0: no limit) and restart the server",
            )
            return code or 1
        return code

    async def _start_git(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        command: GitCommand,
        app: App,
        token: str | None,
    ) -> asyncio.subprocess.Process:
        """git receive-pack / upload-pack on the app's repository, with the server's hooks."""
        service = command.service.removeprefix("git-")
        limit = (
            ["-c", f"receive.maxInputSize={self._max_push}"]
            if (command.is_push and self._max_push)
            else []
        )
        return await asyncio.create_subprocess_exec(
            "git",
            "-c",
            f"core.hooksPath={self._hooks_dir}",
            *limit,
            service,
            str(self._repos.path(app.name)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._git_env(process, app, token),
        )

    async def _relay(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        git: asyncio.subprocess.Process,
        seen: Traffic,
        app: App,
        busy: Callable[[], bool],
    ) -> int | None:
        """Bytes between the session and `git` until git exits: its exit code, or None when
        the session was closed for silence (the client was told). git never outlives this."""
        assert git.stdin and git.stdout and git.stderr
        tasks = [
            asyncio.create_task(pump_in(process.stdin, git.stdin, seen)),
            asyncio.create_task(pump_out(git.stdout, process.stdout, seen)),
            asyncio.create_task(pump_out(git.stderr, process.stderr, seen)),
        ]
        waiter = asyncio.create_task(git.wait())
        idle = asyncio.create_task(wait_until_idle(seen, self._settings.ssh_idle_timeout, busy))
        try:
            await asyncio.wait({waiter, idle}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                log.warning(
                    "closing a silent git session for %s after %gs",
                    app.name,
                    self._settings.ssh_idle_timeout,
                )
                _say(
                    process,
                    f"rivetr: no data for {self._settings.ssh_idle_timeout:g}s; "
                    "closing this session (setting ssh_idle_timeout)",
                )
                return None
            code = waiter.result()
            await asyncio.gather(*tasks[1:])
        finally:
            for task in (*tasks, idle, waiter):
                task.cancel()
            if git.returncode is None:
                git.kill()
                await git.wait()
        return code


class _SshSession:
    """A command's stdout and stdin on the SSH channel."""

    def __init__(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self._process = process
        self.terminal: SshTerminal | None = None  # ssh -t: consoles take the pty

    async def out(self, line: str) -> None:
        await self.out_bytes(line.encode() + b"\n")

    async def out_bytes(self, data: bytes) -> None:
        if self.terminal is not None:  # a raw-mode terminal needs CR LF to start a line
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self._process.stdout.write(data)
        await self._process.stdout.drain()

    async def read_chunk(self) -> bytes:
        """The next bytes of stdin as they arrive (services:import); b"" at its end."""
        return bytes(await self._process.stdin.read(CHUNK))

    async def read_input(self, limit: int) -> bytes:
        data = b""
        while chunk := await self._process.stdin.read(CHUNK):
            data += chunk
            if len(data) > limit:
                raise ValidationError(f"input is larger than {limit} bytes")
        return data


def _say(process: asyncssh.SSHServerProcess[bytes], message: str) -> None:
    with contextlib.suppress(Exception):
        process.stderr.write(message.encode() + b"\n")
