"""The SSH door under load: MaxStartups-style caps, login grace, auth tries, idle git sessions,
push size, and handshake throttling (issues 10 and 18). Real sockets, real OpenSSH.

Floods come from their own loopback addresses (all of 127/8 reaches the server), so each
test's address has a count and a token bucket of its own.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.helpers import (
    GIT_ENV,
    SHELL_DOCKERFILE_HEAD,
    AppRepo,
    Key,
    Server,
    make_key,
    run,
    ssh_command,
    wait_until,
)

LIMITED = {
    "RIVETR_SSH_MAX_STARTUPS": "8",
    "RIVETR_SSH_MAX_STARTUPS_PER_SOURCE": "4",
    "RIVETR_SSH_HANDSHAKE_RATE": "0",  # the caps alone; throttling has its own tests
    "RIVETR_SSH_LOGIN_GRACE_TIME": "3",
    "RIVETR_SSH_MAX_AUTH_TRIES": "3",
    "RIVETR_SSH_IDLE_TIMEOUT": "2",
    "RIVETR_MAX_PUSH_SIZE": "4m",
}


@pytest.fixture(scope="module")
def limited(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key]
) -> Iterator[Server]:
    """A daemon with small SSH limits, shared by this module's limit tests."""
    yield from running_server(tmp_path_factory.mktemp("sh-limited") / "data", keys, env=LIMITED)


def connect(server: Server, source: str) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", server.ssh_port), timeout=5, source_address=(source, 0)
    )
    return sock


def first_bytes(sock: socket.socket) -> bytes:
    """What the server says first: its SSH version line, or a refusal and EOF."""
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection within `seconds` (reading what it sends)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def bound(source: str, *identities: Path) -> str:
    return ssh_command(*identities) + f" -o BindAddress={source}"


def test_unauthenticated_connections_are_capped_per_address_and_overall(
    limited: Server, keys: dict[str, Key], workdir: Path
) -> None:
    held = [connect(limited, "127.0.0.3") for _ in range(4)]
    try:
        assert all(first_bytes(s).startswith(b"SSH-2.0-") for s in held)
        # The fifth from the same address is dropped at once, before any key exchange.
        started = time.monotonic()
        extra = connect(limited, "127.0.0.3")
        assert first_bytes(extra) == b"Exceeded MaxStartups\r\n"
        assert closed_within(extra, 2)
        assert time.monotonic() - started < 1
        # Another address still gets in, up to the overall cap of 8 ...
        others = [connect(limited, "127.0.0.4") for _ in range(4)]
        held += others
        assert all(first_bytes(s).startswith(b"SSH-2.0-") for s in others)
        # ... and past it nobody new does, from any address.
        assert first_bytes(connect(limited, "127.0.0.5")) == b"Exceeded MaxStartups\r\n"
    finally:
        for sock in held:
            sock.close()
    # Slots come back once the held connections are gone: a real client from .3 gets in.
    assert wait_until(
        lambda: (
            subprocess.run(
                [
                    *bound("127.0.0.3", keys["alice"].private).split(),
                    "-p",
                    str(limited.ssh_port),
                    "git@127.0.0.1",
                    "apps:list",
                ],
                capture_output=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            ).returncode
            == 0
        ),
        timeout=10,
    )


def test_refused_connections_are_logged_as_a_summary(limited: Server) -> None:
    held = [connect(limited, "127.0.0.7") for _ in range(4)]
    try:
        for sock in held:
            first_bytes(sock)
        for _ in range(40):
            extra = connect(limited, "127.0.0.7")
            assert first_bytes(extra) == b"Exceeded MaxStartups\r\n"
            extra.close()
    finally:
        for sock in held:
            sock.close()

    def summary() -> list[tuple[str, int]]:
        return [
            (line, int(m.group(1)))
            for line in limited.log().splitlines()
            if (m := re.search(r"refused .* most from 127\.0\.0\.7 \((\d+)\)", line))
        ]

    # Not 40 lines (nor 160, as asyncssh would write): the first refusal after a quiet
    # spell at once, the rest summed up when the 10 s interval ends.
    assert wait_until(lambda: sum(n for _, n in summary()) == 40, timeout=25), summary()
    assert len(summary()) <= 2, summary()
    assert all("over ssh_max_startups_per_source" in line for line, _ in summary())


def test_clients_that_do_not_authenticate_in_time_are_closed(limited: Server) -> None:
    sock = connect(limited, "127.0.0.6")
    try:
        assert first_bytes(sock).startswith(b"SSH-2.0-")
        sock.sendall(b"SSH-2.0-slowpoke\r\n")
        started = time.monotonic()
        assert closed_within(sock, 10)  # login grace time 3 s (the default is 30)
        assert 2 < time.monotonic() - started < 6
    finally:
        sock.close()


def test_auth_attempts_per_connection_are_capped(
    limited: Server, keys: dict[str, Key], workdir: Path
) -> None:
    strangers = [make_key(workdir / "keys", f"stranger{i}").private for i in range(4)]
    # LogLevel INFO first (ssh takes the first value given): it prints the disconnect reason.
    many = subprocess.run(
        [
            "ssh",
            "-o",
            "LogLevel=INFO",
            *bound("127.0.0.8", *strangers, keys["alice"].private).split()[1:],
            "-p",
            str(limited.ssh_port),
            "git@127.0.0.1",
            "apps:list",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert many.returncode != 0
    assert "too many authentication attempts" in many.stderr, many.stderr
    # Probes count: alice's key alone is a probe and a signature, within the 3 allowed.
    alone = subprocess.run(
        [
            *bound("127.0.0.8", keys["alice"].private).split(),
            "-p",
            str(limited.ssh_port),
            "git@127.0.0.1",
            "apps:list",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert alone.returncode == 0, alone.stderr


def _git_processes(data_dir: Path, app: str) -> list[int]:
    repo = str(data_dir / "repos" / f"{app}.git").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if repo in argv and any(a.endswith(b"receive-pack") for a in argv):
                found.append(int(entry.name))
    return found


def test_silent_git_sessions_are_closed_and_git_ended(
    limited: Server, keys: dict[str, Key]
) -> None:
    limited.cli("apps:create", "sh-idle")
    # A client that opens a push and then sends nothing (stdin stays open, empty).
    silent = subprocess.Popen(
        [
            *bound("127.0.0.9", keys["alice"].private).split(),
            "-p",
            str(limited.ssh_port),
            "git@127.0.0.1",
            "git-receive-pack 'sh-idle'",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: _git_processes(limited.data_dir, "sh-idle"), timeout=10)
        silent.wait(timeout=15)  # idle timeout 2 s; stdin stays open all the while
        assert silent.stderr is not None
        err = silent.stderr.read().decode()
        assert "no data for 2s; closing this session" in err, err
        assert wait_until(lambda: not _git_processes(limited.data_dir, "sh-idle"), timeout=5)
    finally:
        silent.kill()
        silent.wait()
        for pipe in (silent.stdin, silent.stderr):
            if pipe is not None:
                pipe.close()


def test_a_silent_build_is_not_an_idle_session(
    limited: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """The idle timeout (2 s here) ends silent git sessions, not a push whose deploy has a
    build step that prints nothing for longer."""
    dockerfile = (
        SHELL_DOCKERFILE_HEAD + "RUN sleep 4\nCOPY www /www\nEXPOSE 5000\n"
        'CMD ["/bin/busybox", "httpd", "-f", "-p", "5000", "-h", "/www"]\n'
    )
    repo = AppRepo(workdir / "app", keys["alice"], dockerfile=dockerfile)
    pushed = repo.push(limited.remote("sh-slow"))
    assert pushed.returncode == 0, pushed.stderr
    assert "closing this session" not in pushed.stderr
    assert limited.get("sh-slow") == (200, "hello v1\n")


def test_a_push_over_max_push_size_is_refused_and_nothing_stored(
    limited: Server, keys: dict[str, Key], workdir: Path
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    (repo.path / "noise.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    repo.commit("6 MB of noise")
    refused = repo.push(limited.remote("sh-big"))
    assert refused.returncode != 0
    assert "larger than the server's max_push_size (4m); nothing was stored" in refused.stderr
    assert "RIVETR_MAX_PUSH_SIZE" in refused.stderr
    assert repo.remote_sha(limited.remote("sh-big")) is None
    objects = limited.data_dir / "repos" / "sh-big.git" / "objects"
    stored = sum(f.stat().st_size for f in objects.rglob("*") if f.is_file())
    assert stored < 100_000, stored
    assert limited.statuses("sh-big") == []

    # Without the noise it deploys, and apps:info shows what the repository takes.
    repo.git("reset", "-q", "--hard", "HEAD^")
    assert repo.push(limited.remote("sh-big"), "+main").returncode == 0
    info = limited.cli("apps:info", "sh-big").stdout
    match = re.search(r"repository:\s+([\d.]+) (KiB|MiB) \(pushes up to max_push_size 4m\)", info)
    assert match, info
    assert match.group(2) == "MiB" or float(match.group(1)) > 100  # busybox is ~1-2 MB


# --- defaults: algorithms and handshake throttling ---------------------------------------------


@pytest.fixture(scope="module")
def defaults(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key]
) -> Iterator[Server]:
    """A daemon with the default SSH settings, for the audit and the algorithm tests."""
    yield from running_server(tmp_path_factory.mktemp("sh-defaults") / "data", keys)


def test_ssh_audit_is_clean_and_a_burst_of_pushes_still_gets_through(
    defaults: Server, keys: dict[str, Key], workdir: Path
) -> None:
    audit = subprocess.run(
        [
            str(Path(sys.executable).parent / "ssh-audit"),
            "-n",
            "-p",
            str(defaults.ssh_port),
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = audit.stdout + audit.stderr
    assert "(kex) curve25519-sha256" in report, report  # the audit really ran
    assert "[fail]" not in report, report
    assert "throttling" not in report, report

    # Ten apps pushed in parallel from one CI runner (one address) all deploy.
    repos = [AppRepo(workdir / f"app{i}", keys["alice"]) for i in range(10)]
    pushes = [
        subprocess.Popen(
            ["git", "push", defaults.remote(f"sh-burst{i}"), "main"],
            cwd=repo.path,
            env={
                **os.environ,
                **GIT_ENV,
                "GIT_SSH_COMMAND": bound("127.0.0.10", keys["alice"].private),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i, repo in enumerate(repos)
    ]
    results = [(p.wait(timeout=240), p.stderr.read().decode() if p.stderr else "") for p in pushes]
    assert [code for code, _ in results] == [0] * 10, [r for r in results if r[0]]
    for i in range(10):
        assert defaults.get(f"sh-burst{i}") == (200, "hello v1\n")


def test_handshakes_beyond_the_burst_wait_instead_of_failing(defaults: Server) -> None:
    started = time.monotonic()
    socks = [connect(defaults, "127.0.0.11") for _ in range(15)]
    try:
        times = []
        for sock in socks:
            assert first_bytes(sock).startswith(b"SSH-2.0-")
            times.append(time.monotonic() - started)
        # The burst (10) answers at once; the rest come at 5 per second (the 15th's token
        # is 1 s away), none is refused.
        assert max(times[:10]) < 0.8, times
        assert times[-1] > 0.9, times
    finally:
        for sock in socks:
            sock.close()


KEPT_KEX = [
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
]
KEPT_CIPHERS = [
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
]
KEPT_MACS = ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"]


@pytest.mark.parametrize(
    "option",
    [f"KexAlgorithms={k}" for k in KEPT_KEX]
    + [f"Ciphers={c}" for c in KEPT_CIPHERS]
    + [f"MACs={m} -o Ciphers=aes128-ctr" for m in KEPT_MACS],
)
def test_openssh_restricted_to_each_kept_algorithm_pushes(
    defaults: Server, keys: dict[str, Key], workdir: Path, option: str
) -> None:
    repo = AppRepo(workdir / "app", keys["alice"])
    if not (defaults.data_dir / "repos" / "sh-algs.git").exists():
        assert repo.push(defaults.remote("sh-algs")).returncode == 0
    branch = re.sub(r"[^a-z0-9-]", "-", option.lower())[:60]
    result = run(
        ["git", "push", defaults.remote("sh-algs"), f"main:{branch}"],
        cwd=repo.path,
        check=False,
        env={"GIT_SSH_COMMAND": bound("127.0.0.12", keys["alice"].private) + f" -o {option}"},
    )
    assert result.returncode == 0, result.stderr
    assert "not deployed" in result.stderr


@pytest.mark.parametrize(
    "option",
    [
        "KexAlgorithms=diffie-hellman-group14-sha1",
        "KexAlgorithms=ecdh-sha2-nistp256",
        "KexAlgorithms=diffie-hellman-group-exchange-sha256",
        "Ciphers=aes128-cbc",
        "MACs=hmac-sha1 -o Ciphers=aes128-ctr",
        "MACs=hmac-sha2-256 -o Ciphers=aes128-ctr",
        "MACs=umac-64-etm@openssh.com -o Ciphers=aes128-ctr",
    ],
)
def test_weak_algorithms_are_not_offered(
    defaults: Server, keys: dict[str, Key], option: str
) -> None:
    result = subprocess.run(
        [
            "ssh",
            "-o",
            "LogLevel=INFO",
            *(bound("127.0.0.12", keys["alice"].private) + f" -o {option}").split()[1:],
            "-p",
            str(defaults.ssh_port),
            "git@127.0.0.1",
            "apps:list",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "no matching" in result.stderr.lower(), result.stderr


async def test_the_post_quantum_key_exchange_works(defaults: Server, keys: dict[str, Key]) -> None:
    """OpenSSH here (9.2) predates mlkem768x25519; asyncssh's client speaks it."""
    import asyncssh

    async with asyncssh.connect(
        "127.0.0.1",
        defaults.ssh_port,
        username="git",
        known_hosts=None,
        client_keys=[str(keys["alice"].private)],
        kex_algs=["mlkem768x25519-sha256"],
        local_addr=("127.0.0.12", 0),
    ) as conn:
        result = await conn.run("apps:list", check=False)
        assert result.exit_status == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "RIVETR_SSH_KEX_ALGS",
            "curve25519-sha256,no-such-kex",
            "setting 'ssh_kex_algs': unknown algorithm(s) no-such-kex; this server supports:",
        ),
        (
            "RIVETR_SSH_CIPHERS",
            "aes256-ctr,rot13",
            "setting 'ssh_ciphers': unknown algorithm(s) rot13",
        ),
        (
            "RIVETR_SSH_MACS",
            "hmac-sha2-256-etm@openssh.com hmac-sha1",
            "expected algorithm names separated by commas",
        ),
    ],
)
def test_unknown_algorithm_names_stop_start_up(
    docker_engine: None, tmp_path: Path, name: str, value: str, message: str
) -> None:
    srv = Server(tmp_path / "data", {name: value})
    try:
        with pytest.raises(AssertionError, match="daemon exited") as failed:
            srv.start()
        assert message in str(failed.value)
    finally:
        srv.stop()
