"""Client mode's SSH side: connect as OpenSSH would, run one verb, stream it, return its status.

paramiko is imported here and nowhere else, and only the CLI's client mode imports this
module (paramiko costs ~0.1 s to import, which local commands need not pay).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import paramiko

from rivetr_git.cli.console import console, wants_terminal
from rivetr_git.cli.remote import RemoteUrl, Target
from rivetr_git.errors import ClientError, HostKeyMismatch, HostKeyUnknown
from rivetr_git.terminal import ByteNeutraliser

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
CONNECT_TIMEOUT = 15.0
_CHUNK = 32768
# known_hosts says "ssh-rsa"; the algorithms that verify such a key have other names.
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}
# paramiko logs the failures it raises; they reach the user once, as our own message.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Endpoint:
    """Where to connect and as whom, after ~/.ssh/config."""

    host: str  # the HostName
    port: int
    user: str
    identity_files: tuple[Path, ...]  # IdentityFile entries, then the default keys

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files this server's key under in known_hosts."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def ssh_hint(self) -> str:
        port = "" if self.port == 22 else f"-p {self.port} "
        return f"ssh {port}{self.user}@{self.host} help"


def resolve_endpoint(url: RemoteUrl, ssh_dir: Path | None = None) -> Endpoint:
    """Host, port, user and keys as OpenSSH picks them: the URL, then ~/.ssh/config
    (HostName, Port, User, IdentityFile), then the defaults."""
    ssh_dir = Path("~/.ssh").expanduser() if ssh_dir is None else ssh_dir
    config_file = ssh_dir / "config"
    try:
        config = (
            paramiko.SSHConfig.from_path(str(config_file))
            if config_file.is_file()
            else paramiko.SSHConfig()
        )
        entry = config.lookup(url.host)
        port = url.port or int(entry.get("port", 22))
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise ClientError(f"cannot use {config_file}: {exc}") from None
    identities = [Path(p).expanduser() for p in entry.get("identityfile", [])]
    identities += [ssh_dir / name for name in DEFAULT_KEYS]
    return Endpoint(
        host=entry.get("hostname", url.host),
        port=port,
        user=url.user or entry.get("user") or getpass.getuser(),
        identity_files=tuple(dict.fromkeys(identities)),
    )


def fingerprint(key: paramiko.PKey) -> str:
    """`ssh-ed25519 SHA256:...`, as OpenSSH prints a key."""
    return f"{key.get_name()} {key.fingerprint}"


def known_host_keys(ssh_dir: Path | None = None) -> paramiko.HostKeys:
    """The user's and the system's known_hosts, merged. Read only: never written here."""
    keys = paramiko.HostKeys()
    ssh_dir = Path("~/.ssh").expanduser() if ssh_dir is None else ssh_dir
    for path in (ssh_dir / "known_hosts", SYSTEM_KNOWN_HOSTS):
        if path.is_file():
            try:
                keys.load(str(path))
            except OSError as exc:
                raise ClientError(f"cannot read {path}: {exc.strerror}") from None
    return keys


def check_host_key(endpoint: Endpoint, offered: paramiko.PKey, known: paramiko.HostKeys) -> None:
    """Raise unless known_hosts holds exactly `offered` for this server."""
    name = endpoint.known_hosts_name
    entries = known.lookup(name)
    if not entries:
        raise HostKeyUnknown(
            f"the server {name} is not in your known_hosts, so it is not trusted; it offered "
            f"{fingerprint(offered)}. If its admin confirms that key (`ssh-keygen -lf "
            "ssh_host_ed25519_key.pub` in the server's data dir), trust it by connecting once "
            f"with `{endpoint.ssh_hint()}` and answering yes, then run this again"
        )
    expected = entries.get(offered.get_name())
    if expected is None or expected.asbytes() != offered.asbytes():
        want = expected or next(iter(entries.values()))
        raise HostKeyMismatch(
            f"HOST KEY MISMATCH for {name}: your known_hosts holds {fingerprint(want)} but the "
            f"server offered {fingerprint(offered)}. Someone may be intercepting the "
            "connection, or the server's key was replaced; nothing was sent. If the admin "
            f"confirms the new key, remove the old one with `ssh-keygen -R '{name}'` and "
            f"connect once with `{endpoint.ssh_hint()}`"
        )


def _prefer_known_key_types(
    transport: paramiko.Transport, endpoint: Endpoint, known: paramiko.HostKeys
) -> None:
    # As OpenSSH does: ask for the key type we can check, not one we have never seen.
    entries = known.lookup(endpoint.known_hosts_name)
    if not entries:
        return
    options = transport.get_security_options()
    wanted = [alg for kind in entries for alg in _ALGORITHMS.get(kind, (kind,))]
    first = [alg for alg in wanted if alg in options.key_types]
    options.key_types = tuple(first + [t for t in options.key_types if t not in first])


@contextlib.contextmanager
def connect(endpoint: Endpoint, known: paramiko.HostKeys) -> Iterator[paramiko.Transport]:
    """An authenticated transport to `endpoint`, closed on exit. Raises ClientError."""
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), CONNECT_TIMEOUT)
    except OSError as exc:
        raise ClientError(
            f"cannot connect to {where}: {exc.strerror or exc}; is the "
            "rivetr-git server running there?"
        ) from None
    transport = paramiko.Transport(sock)
    try:
        _prefer_known_key_types(transport, endpoint, known)
        try:
            transport.start_client(timeout=CONNECT_TIMEOUT)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ClientError(f"SSH handshake with {where} failed: {exc}") from None
        check_host_key(endpoint, transport.get_remote_server_key(), known)
        _authenticate(transport, endpoint)
        transport.set_keepalive(30)
        yield transport
    finally:
        transport.close()


def _candidate_keys(endpoint: Endpoint, skipped: list[str]) -> Iterator[tuple[str, paramiko.PKey]]:
    """Agent keys, then key files; files that need a passphrase are noted in `skipped`."""
    agent = paramiko.Agent()
    try:
        try:
            agent_keys = agent.get_keys()
        except paramiko.SSHException as exc:
            skipped.append(f"ssh-agent ({exc})")
            agent_keys = ()
        for agent_key in agent_keys:
            yield f"agent key {agent_key.fingerprint}", agent_key
    finally:
        agent.close()
    for path in endpoint.identity_files:
        if not path.is_file():
            continue
        try:
            key = paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            skipped.append(f"{path} (needs its passphrase: add it to your agent with ssh-add)")
            continue
        except (paramiko.SSHException, OSError, ValueError) as exc:
            skipped.append(f"{path} ({exc})")
            continue
        yield str(path), key


def _authenticate(transport: paramiko.Transport, endpoint: Endpoint) -> None:
    tried: list[str] = []
    skipped: list[str] = []
    for label, key in _candidate_keys(endpoint, skipped):
        try:
            transport.auth_publickey(endpoint.user, key)
        except paramiko.AuthenticationException:
            tried.append(label)
            continue
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ClientError(
                f"SSH login to {endpoint.host}:{endpoint.port} failed: {exc}"
            ) from None
        if transport.is_authenticated():
            return
        tried.append(label)
    notes = f"; skipped {', '.join(skipped)}" if skipped else ""
    if not tried:
        raise ClientError(
            f"no SSH key to log in with: no ssh-agent keys and none of "
            f"{', '.join(map(str, endpoint.identity_files))} exists{notes}. Create one with "
            "`ssh-keygen -t ed25519` and ask the server's admin to register its .pub"
        )
    raise ClientError(
        f"the server {endpoint.host}:{endpoint.port} does not know your SSH key (tried "
        f"{', '.join(tried)}{notes}). Ask its admin to register your public key: "
        "`rivetr-git keys add NAME KEY.pub` on the server, or `rivetr-git keys:add NAME "
        "< KEY.pub` from an admin's checkout"
    )


def run_remote(
    target: Target,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
) -> int:
    """Run `target.command` on its server; stream its output; return its exit status.

    stdin is forwarded when it is not a terminal (keys:add reads a key from it); else the
    command gets EOF at once. Ctrl-C closes the channel (KeyboardInterrupt propagates).
    `run` and `enter` from a terminal get a pty instead (cli/console.py), as with ssh -t.
    """
    endpoint = resolve_endpoint(target.url)
    with connect(endpoint, known_host_keys()) as transport:
        channel = transport.open_session(timeout=CONNECT_TIMEOUT)
        try:
            if stdin is None and stdout is None and wants_terminal(target.command):
                status = console(channel, target.command)  # `run`/`enter` on a pty
            else:
                channel.exec_command(target.command)
                status = _relay(
                    channel,
                    stdin or _stdin(),
                    stdout or sys.stdout.buffer,
                    stderr or sys.stderr.buffer,
                )
        except BrokenPipeError:
            # Our reader left (`rivetr-git logs -f | head`): stop as a pipeline's writer would.
            _silence_stdout()
            return 128 + signal.SIGPIPE
        finally:
            channel.close()
    if status < 0:
        raise ClientError(
            f"the server {endpoint.host}:{endpoint.port} closed the session without an exit status"
        )
    return status


def _silence_stdout() -> None:
    # Else the interpreter's final flush of stdout fails again, with a traceback.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _stdin() -> BinaryIO | None:
    stream = sys.stdin
    if stream is None or stream.closed or stream.isatty():
        return None
    return stream.buffer


def _relay(
    channel: paramiko.Channel, stdin: BinaryIO | None, stdout: BinaryIO, stderr: BinaryIO
) -> int:
    """Copy the channel's output out as it arrives and stdin in; the remote exit status.

    The server neutralises what apps and builds print; so does this side for a terminal,
    in case the server is an older one (only the server's own colours reach it). Into a
    pipe or file output goes byte for byte (`config:get` in scripts)."""
    out, err = _guard(stdout), _guard(stderr)
    in_fd = stdin.fileno() if stdin is not None else None
    if in_fd is None:
        channel.shutdown_write()
    pending = b""
    while True:
        watch: list[int] = [channel.fileno()]
        if in_fd is not None and not pending:
            watch.append(in_fd)
        # The timeout only bounds how late we notice an exit status sent without data.
        readable, _, _ = select.select(watch, [], [], 0.2)
        while channel.recv_ready():
            _emit(stdout, out(channel.recv(_CHUNK), False))
        while channel.recv_stderr_ready():
            _emit(stderr, err(channel.recv_stderr(_CHUNK), False))
        if in_fd is not None and in_fd in readable:
            pending = os.read(in_fd, _CHUNK)
            if not pending:
                channel.shutdown_write()
                in_fd = None
        if pending and channel.send_ready():
            try:
                pending = pending[channel.send(pending) :]
            except OSError:  # the command ended without reading all of its input
                pending, in_fd = b"", None
        if channel.exit_status_ready() and not (
            channel.recv_ready() or channel.recv_stderr_ready()
        ):
            _emit(stdout, out(b"", True))
            _emit(stderr, err(b"", True))
            return channel.recv_exit_status()


def _guard(stream: BinaryIO) -> Callable[[bytes, bool], bytes]:
    """What to write to `stream` for received bytes (and, with True, at the end)."""
    if not stream.isatty():
        return lambda data, final: data
    return ByteNeutraliser(keep_style=True).feed


def _emit(stream: BinaryIO, data: bytes) -> None:
    stream.write(data)
    stream.flush()
