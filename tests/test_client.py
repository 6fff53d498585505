"""Client mode end to end: `rivetr-git VERB` in an app's checkout, over real SSH (paramiko)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from rivetr_git.cli.client import resolve_endpoint
from rivetr_git.cli.remote import RemoteUrl
from tests.helpers import AppRepo, Key, Server, run

PRIVATE_ENV = ("SSH_AUTH_SOCK", "SSH_AGENT_PID")


def fingerprint_of(public_key: Path) -> str:
    """What OpenSSH's own ssh-keygen prints: the oracle for the client's messages."""
    return run(["ssh-keygen", "-lf", str(public_key)]).stdout.split()[1]


def make_home(base: Path, key: Key | None, known: list[tuple[str, Path]]) -> Path:
    """A HOME with .ssh/id_ed25519 (a copy of `key`) and a known_hosts of (name, pubkey)."""
    home = base / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in ssh.iterdir():
        stale.unlink()
    if key is not None:
        shutil.copy(key.private, ssh / "id_ed25519")
        (ssh / "id_ed25519").chmod(0o600)
    lines = [f"{name} {' '.join(pub.read_text().split()[:2])}\n" for name, pub in known]
    (ssh / "known_hosts").write_text("".join(lines))
    return home


def cli_env(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in PRIVATE_ENV and not k.startswith("RIVETR_")
    }
    return {**env, "HOME": str(home)}


def rivetr(
    cwd: Path, home: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rivetr_git.cli.main", *args],
        cwd=cwd,
        env=cli_env(home),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


# --- against the real daemon --------------------------------------------------------------------


@dataclass
class Deployed:
    app: str
    repo: AppRepo
    host_key: Path
    name: str  # the server's name in known_hosts, [127.0.0.1]:PORT


@pytest.fixture(scope="module")
def deployed(
    server: Server, keys: dict[str, Key], tmp_path_factory: pytest.TempPathFactory
) -> Deployed:
    """An app with two releases, checked out with a `rivetr` remote."""
    app = "client-mode"
    repo = AppRepo(tmp_path_factory.mktemp("client") / "app", keys["alice"])
    repo.git("remote", "add", "rivetr", server.remote(app))
    assert repo.push("rivetr").returncode == 0
    repo.write("www/index.html", "hello v2\n")
    repo.commit("second")
    assert repo.push("rivetr").returncode == 0
    return Deployed(
        app, repo, server.data_dir / "ssh_host_ed25519_key.pub", f"[127.0.0.1]:{server.ssh_port}"
    )


@pytest.fixture
def home(deployed: Deployed, keys: dict[str, Key], tmp_path: Path) -> Path:
    return make_home(tmp_path, keys["alice"], [(deployed.name, deployed.host_key)])


def test_releases_from_the_checkout_match_the_server(
    server: Server, deployed: Deployed, home: Path
) -> None:
    result = rivetr(deployed.repo.path / "www", home, "releases")
    assert result.returncode == 0, result.stderr
    assert result.stdout == server.cli("releases", deployed.app).stdout
    assert len(result.stdout.splitlines()) == 2
    assert deployed.repo.head()[:7] in result.stdout.splitlines()[0]


def test_app_and_remote_options(server: Server, deployed: Deployed, home: Path) -> None:
    repo = deployed.repo
    expected = server.cli("releases", deployed.app).stdout
    repo.git("remote", "add", "by-scp-form", f"git@[127.0.0.1:{server.ssh_port}]:other.git")
    repo.git("remote", "add", "same-app", server.remote(deployed.app) + ".git")
    try:
        by_remote = rivetr(repo.path, home, "--remote", "same-app", "releases")
        assert (by_remote.returncode, by_remote.stdout) == (0, expected), by_remote.stderr
        by_app = rivetr(repo.path, home, "releases", "--remote=by-scp-form", "--app", deployed.app)
        assert (by_app.returncode, by_app.stdout) == (0, expected), by_app.stderr
        other = rivetr(repo.path, home, "--remote", "by-scp-form", "releases")
        assert other.returncode == 1
        assert "app 'other' does not exist" in other.stderr
    finally:
        repo.git("remote", "remove", "by-scp-form")
        repo.git("remote", "remove", "same-app")


def test_the_remote_exit_status_is_passed_through(
    server: Server, deployed: Deployed, home: Path
) -> None:
    live = server.cli("releases", deployed.app).stdout.split()[1].removeprefix("#")
    missing = rivetr(deployed.repo.path, home, "rollback", "99999")
    assert missing.returncode == 1  # NotFound on the server
    assert f"{deployed.app} has no release #99999" in missing.stderr
    already = rivetr(deployed.repo.path, home, "rollback", live)
    assert already.returncode == 2  # ValidationError on the server
    assert f"release #{live} is already live" in already.stderr


def test_config_round_trips_exotic_values_through_client_mode(
    server: Server, deployed: Deployed, home: Path
) -> None:
    value = "multi\nline 'single' \"double\" a=b=c ✓ $HOME `x`  "
    result = rivetr(deployed.repo.path, home, "config:set", f"EXOTIC={value}", "--no-restart")
    assert result.returncode == 0, result.stderr
    got = rivetr(deployed.repo.path, home, "config:get", "EXOTIC")
    assert (got.returncode, got.stdout) == (0, value + "\n"), got.stderr
    # The same value through the local CLI on the server's machine.
    assert server.cli("config:get", deployed.app, "EXOTIC").stdout == value + "\n"
    names = rivetr(deployed.repo.path, home, "config")
    assert "EXOTIC" in names.stdout and value not in names.stdout
    bad = rivetr(deployed.repo.path, home, "config:set", "PORT=1")
    assert bad.returncode == 2 and "set by the platform" in bad.stderr


def test_a_host_key_mismatch_is_refused_and_runs_nothing(
    server: Server, deployed: Deployed, keys: dict[str, Key], tmp_path: Path
) -> None:
    impostor = keys["bob"].public  # known_hosts says the server's key is this one
    home = make_home(tmp_path, keys["alice"], [(deployed.name, impostor)])
    before = server.statuses(deployed.app)
    result = rivetr(deployed.repo.path, home, "rollback")  # would start the older release
    assert result.returncode == 255
    assert "HOST KEY MISMATCH" in result.stderr
    assert fingerprint_of(impostor) in result.stderr
    assert fingerprint_of(deployed.host_key) in result.stderr
    assert server.statuses(deployed.app) == before
    # known_hosts was not "fixed" behind the user's back.
    assert (home / ".ssh" / "known_hosts").read_text().split()[2] == impostor.read_text().split()[1]


def test_an_unknown_host_is_refused_with_its_fingerprint(
    server: Server, deployed: Deployed, keys: dict[str, Key], tmp_path: Path
) -> None:
    home = make_home(tmp_path, keys["alice"], [("[127.0.0.1]:1", deployed.host_key)])
    result = rivetr(deployed.repo.path, home, "releases")
    assert result.returncode == 255
    assert "not in your known_hosts" in result.stderr
    assert fingerprint_of(deployed.host_key) in result.stderr
    assert f"ssh -p {server.ssh_port} git@127.0.0.1 help" in result.stderr
    assert (home / ".ssh" / "known_hosts").read_text().startswith("[127.0.0.1]:1 ")


def test_a_key_the_server_does_not_know_is_explained(
    deployed: Deployed, keys: dict[str, Key], tmp_path: Path
) -> None:
    known = [(deployed.name, deployed.host_key)]
    stranger = rivetr(deployed.repo.path, make_home(tmp_path, keys["mallory"], known), "releases")
    assert stranger.returncode == 255
    assert "does not know your SSH key" in stranger.stderr
    assert "id_ed25519" in stranger.stderr and "keys:add" in stranger.stderr
    keyless = rivetr(deployed.repo.path, make_home(tmp_path, None, known), "releases")
    assert keyless.returncode == 255
    assert "no SSH key to log in with" in keyless.stderr


def test_a_server_that_is_not_there_is_explained(deployed: Deployed, home: Path) -> None:
    repo = deployed.repo
    repo.git("remote", "add", "nowhere", "ssh://git@127.0.0.1:1/app")
    try:
        result = rivetr(repo.path, home, "--remote", "nowhere", "releases")
    finally:
        repo.git("remote", "remove", "nowhere")
    assert result.returncode == 255
    assert "cannot connect to 127.0.0.1:1" in result.stderr


# --- ~/.ssh/config ------------------------------------------------------------------------------


def test_ssh_config_supplies_hostname_port_user_and_identity(tmp_path: Path) -> None:
    (tmp_path / "config").write_text(
        "Host myserver\n  HostName 127.0.0.1\n  Port 2200\n  User deploy\n"
        f"  IdentityFile {tmp_path}/work_key\n"
    )
    endpoint = resolve_endpoint(RemoteUrl("myserver", None, None, "app"), ssh_dir=tmp_path)
    assert (endpoint.host, endpoint.port, endpoint.user) == ("127.0.0.1", 2200, "deploy")
    assert endpoint.identity_files[0] == tmp_path / "work_key"
    assert [p.name for p in endpoint.identity_files[1:]] == ["id_ed25519", "id_ecdsa", "id_rsa"]
    assert endpoint.known_hosts_name == "[127.0.0.1]:2200"
    # What the URL says wins, as with OpenSSH.
    endpoint = resolve_endpoint(RemoteUrl("myserver", 2222, "git", "app"), ssh_dir=tmp_path)
    assert (endpoint.port, endpoint.user) == (2222, "git")
    plain = resolve_endpoint(RemoteUrl("example.com", None, "git", "app"), ssh_dir=tmp_path)
    assert (plain.host, plain.port, plain.known_hosts_name) == ("example.com", 22, "example.com")


# --- the transport, byte for byte ---------------------------------------------------------------


@dataclass
class EchoServer:
    """A real asyncssh server standing in for the daemon's verbs (most of them arrive with
    the admin-verb work): it answers with exactly what the client sent, so quoting, stdin
    forwarding, streaming, exit statuses and Ctrl-C are checked on the client's side."""

    port: int = 0
    host_key: Path = Path()
    closed: threading.Event = field(default_factory=threading.Event)

    async def handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        argv = shlex.split(process.command or "")
        if argv[0] == "keys:add":  # reads its stdin to the end, then reports
            data = await process.stdin.read()
            process.stdout.write(json.dumps({"argv": argv, "stdin": data.decode()}).encode())
            process.exit(0)
        elif argv[0] == "deploys":  # what an older server replays raw: escapes and colour
            process.stdout.write(b"msg \x1b]0;TITLE\x07 \x1b[31mred\x1b[0m end\n")
            process.exit(0)
        elif argv[0] == "run":  # exits with the status it is given
            process.stderr.write(b"exiting\n")
            process.exit(int(argv[-1]))
        elif argv[0] == "logs":  # streams, echoes stdin lines, runs until the client leaves
            process.stdout.write(b"ready\n")
            try:
                while line := await process.stdin.readline():
                    process.stdout.write(b"got " + line)
            finally:
                self.closed.set()


@pytest.fixture
def echo(tmp_path: Path, keys: dict[str, Key]) -> Iterator[EchoServer]:
    server = EchoServer(host_key=tmp_path / "echo_host_key.pub")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server.host_key.write_bytes(host_key.export_public_key())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def listen() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            encoding=None,
            authorized_client_keys=str(keys["alice"].public),
            process_factory=server.handle,
        )

    listener = asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
    server.port = listener.get_port()
    try:
        yield server
    finally:
        listener.close()
        asyncio.run_coroutine_threadsafe(listener.wait_closed(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def echo_checkout(echo: EchoServer, keys: dict[str, Key], tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "checkout"
    repo.mkdir()
    run(["git", "init", "-q"], cwd=repo)
    run(["git", "remote", "add", "rivetr", f"ssh://git@127.0.0.1:{echo.port}/hello"], cwd=repo)
    return repo, make_home(tmp_path, keys["alice"], [(f"[127.0.0.1]:{echo.port}", echo.host_key)])


@contextlib.contextmanager
def following(repo: Path, home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`rivetr-git logs -f` in the background, with pipes for all three streams."""
    client = subprocess.Popen(
        [sys.executable, "-m", "rivetr_git.cli.main", "logs", "-f"],
        cwd=repo,
        env=cli_env(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield client
    finally:
        if client.poll() is None:
            client.kill()
        client.communicate(timeout=30)


def test_arguments_and_stdin_arrive_exactly(echo_checkout: tuple[Path, Path]) -> None:
    repo, home = echo_checkout
    name = "é'\"$(x)` \n="
    key_text = "ssh-ed25519 AAAA comment with spaces\nsecond line ✓\n"
    result = rivetr(repo, home, "keys:add", name, "--admin", stdin=key_text)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"argv": ["keys:add", name, "--admin"], "stdin": key_text}


def test_a_terminal_stdin_is_not_read_the_command_gets_eof(
    echo_checkout: tuple[Path, Path],
) -> None:
    repo, home = echo_checkout
    primary, secondary = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rivetr_git.cli.main", "keys:add", "bob"],
            cwd=repo,
            env=cli_env(home),
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stdin"] == ""


def test_escapes_are_neutralised_for_a_terminal_and_kept_for_a_pipe(
    echo_checkout: tuple[Path, Path],
) -> None:
    repo, home = echo_checkout
    raw = b"msg \x1b]0;TITLE\x07 \x1b[31mred\x1b[0m end\n"
    piped = subprocess.run(
        [sys.executable, "-m", "rivetr_git.cli.main", "deploys"],
        cwd=repo,
        env=cli_env(home),
        capture_output=True,
        timeout=60,
    )
    assert (piped.returncode, piped.stdout) == (0, raw)  # scripts get the bytes
    primary, secondary = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rivetr_git.cli.main", "deploys"],
            cwd=repo,
            env=cli_env(home),
            stdout=secondary,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        shown = os.read(primary, 4096)
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 0, result.stderr
    assert shown == b"msg ^[]0;TITLE^G \x1b[31mred\x1b[0m end\r\n"  # the colour stays


@pytest.mark.parametrize("status", [0, 3, 42])
def test_any_exit_status_comes_back(echo_checkout: tuple[Path, Path], status: int) -> None:
    repo, home = echo_checkout
    result = rivetr(repo, home, "run", "sh", "-c", "exit", str(status))
    assert (result.returncode, result.stderr) == (status, "exiting\n")


def test_output_streams_as_it_comes_and_ctrl_c_closes_the_session(
    echo: EchoServer, echo_checkout: tuple[Path, Path]
) -> None:
    with following(*echo_checkout) as client:
        assert client.stdin is not None and client.stdout is not None
        # Each answer is read before the next question is sent: nothing is held back.
        assert client.stdout.readline() == b"ready\n"
        for word in (b"one\n", b"two\n"):
            client.stdin.write(word)
            client.stdin.flush()
            assert client.stdout.readline() == b"got " + word
        assert not echo.closed.is_set()
        client.send_signal(signal.SIGINT)
        assert client.wait(timeout=30) == 130
        assert echo.closed.wait(timeout=30), "the server never saw the session end"


def test_a_reader_that_leaves_ends_the_command_quietly(
    echo: EchoServer, echo_checkout: tuple[Path, Path]
) -> None:
    with following(*echo_checkout) as client:  # like `rivetr-git logs -f | head -1`
        assert client.stdin is not None and client.stdout is not None
        assert client.stdout.readline() == b"ready\n"
        client.stdout.close()
        client.stdin.write(b"more output\n")  # the server answers; writing it fails
        client.stdin.flush()
        assert client.wait(timeout=30) == 128 + signal.SIGPIPE
        assert client.stderr is not None and client.stderr.read() == b""
        assert echo.closed.wait(timeout=30)
