"""Consoles for real: `ssh -tt ... run APP CMD` on a pty in a one-off container, Ctrl-C
reaching the command, `enter APP` in the live container, and who may do it."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import asyncssh

from tests import test_podman
from tests.helpers import AppRepo, Key, Server, docker_ids, ssh_command
from tests.test_admin_verbs import fails, ok, verb
from tests.test_client import cli_env, make_home
from tests.test_cron_e2e import CRON_APP

APP = "crcon"
# Podman's server fixtures, shared with tests/test_podman.py (module-scoped: one server here).
podman_server = test_podman.podman_server
on_podman = test_podman.on_podman


def tty_verb(
    server: Server, key: Key, *argv: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`ssh -tt` (a pty even though our stdin is a pipe) running one verb."""
    return subprocess.run(
        [*_ssh(server, key, "-tt"), shlex.join(argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        input="",
    )


def _ssh(server: Server, key: Key, *options: str) -> list[str]:
    return [
        *ssh_command(key.private).split(),
        *options,
        "-p",
        str(server.ssh_port),
        "git@127.0.0.1",
    ]


def _deployed(server: Server, key: Key, workdir: Path) -> None:
    if APP in ok(server, key, "apps:list"):
        return
    repo = AppRepo(workdir / "app", key, CRON_APP)
    assert repo.push(server.remote(APP)).returncode == 0


def _live_container(server: Server) -> str:
    (container,) = [
        c
        for c in docker_ids("ps", server.instance, f"label=rivetr.app={APP}")
        if c not in docker_ids("ps", server.instance, "label=rivetr.oneoff=1")
    ]
    return container


def test_run_gets_a_terminal_only_with_t(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    _deployed(server, alice, workdir)
    probe = "test -t 0 && echo tty-yes || echo tty-no; sleep 0.5; stty size; echo TERM=$TERM"
    with_t = tty_verb(server, alice, "run", APP, "sh", "-c", probe)
    assert with_t.returncode == 0, with_t.stderr
    assert "tty-yes" in with_t.stdout
    assert "24 80" in with_t.stdout  # no window size from a pipe: 80x24
    assert "TERM=" in with_t.stdout and "TERM=\r" not in with_t.stdout
    without = verb(server, alice, "run", APP, "sh", "-c", probe)
    assert without.returncode == 0, without.stderr
    assert "tty-no" in without.stdout
    assert docker_ids("ps", server.instance, "label=rivetr.oneoff=1") == []


def test_ctrl_c_over_the_pty_interrupts_the_command(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    _deployed(server, alice, workdir)
    console = subprocess.Popen(
        [*_ssh(server, alice, "-tt"), shlex.join(["run", APP, "sh", "-c", "echo ready; sleep 60"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert console.stdin is not None and console.stdout is not None
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while b"ready" not in seen and time.monotonic() < deadline:
            if select.select([console.stdout], [], [], 1)[0]:
                chunk = os.read(console.stdout.fileno(), 4096)
                assert chunk, seen
                seen += chunk
        assert b"ready" in seen
        started = time.monotonic()
        console.stdin.write(b"\x03")
        console.stdin.flush()
        assert console.wait(20) == 130  # sleep died of SIGINT, and its status is ours
        assert time.monotonic() - started < 20
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()
    time.sleep(0.5)
    assert docker_ids("ps", server.instance, "label=rivetr.oneoff=1") == []


def test_enter_runs_in_the_live_container(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    _deployed(server, alice, workdir)
    live = _live_container(server)
    hostname = tty_verb(server, alice, "enter", APP, "hostname")
    assert hostname.returncode == 0, hostname.stderr
    assert hostname.stdout.strip() == live[:12]
    cmdline = tty_verb(server, alice, "enter", APP, "web.1", "cat", "/proc/1/cmdline")
    assert "httpd" in cmdline.stdout  # PID 1 (init) runs the app's command
    shell = tty_verb(server, alice, "enter", APP, "sh", "-c", "test -t 0 && echo tty-yes; exit 3")
    assert shell.returncode == 3 and "tty-yes" in shell.stdout
    # Without -t: no terminal, output streamed, exit code passed through.
    plain = verb(server, alice, "enter", APP, "sh", "-c", "test -t 0 || echo tty-no; hostname")
    assert plain.returncode == 0 and plain.stdout == f"tty-no\n{live[:12]}\n"
    assert "has no process worker.1" in fails(server, alice, "enter", APP, "worker.1")


def test_consoles_need_access_to_the_app(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice, bob = keys["alice"], keys["bob"]
    _deployed(server, alice, workdir)
    for argv in (("run", APP, "true"), ("enter", APP, "true")):
        denied = tty_verb(server, bob, *argv)
        assert denied.returncode != 0 and "does not exist" in denied.stderr
        assert "does not exist" in fails(server, bob, *argv)
    ok(server, alice, "access:grant", "bob", APP)
    try:
        allowed = tty_verb(server, bob, "enter", APP, "sh", "-c", "echo inside")
        assert allowed.returncode == 0 and "inside" in allowed.stdout
    finally:
        ok(server, alice, "access:revoke", "bob", APP)


async def test_the_pty_follows_the_window_size(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    """The client's size at start and its changes reach the command (asyncssh's client,
    which can change the window size while the session runs)."""
    alice = keys["alice"]
    await asyncio.to_thread(_deployed, server, alice, workdir)
    script = "sleep 1; stty size; echo; read line; stty size; echo got $line"
    async with asyncssh.connect(
        "127.0.0.1",
        server.ssh_port,
        username="git",
        known_hosts=None,
        client_keys=[str(alice.private)],
    ) as conn:
        process = await conn.create_process(
            shlex.join(["run", APP, "sh", "-c", script]),
            term_type="xterm-256color",
            term_size=(120, 40),
            encoding=None,
        )
        seen = b""
        while b"40 120" not in seen:
            seen += await asyncio.wait_for(process.stdout.read(1024), 20)
        process.change_terminal_size(90, 20)
        await asyncio.sleep(0.5)  # the resize travels beside the keystrokes, not in order
        process.stdin.write(b"hello\r")
        result = await asyncio.wait_for(process.wait(), 20)
    assert isinstance(result.stdout, bytes)
    rest = seen + result.stdout
    assert b"20 90" in rest and b"got hello" in rest, rest
    assert result.exit_status == 0


def test_consoles_on_podman(on_podman: Server, keys: dict[str, Key], workdir: Path) -> None:
    """The same pty path through Podman's Docker-compatible API (attach and exec hijack)."""
    alice = keys["alice"]
    repo = AppRepo(workdir / "app", alice, CRON_APP)
    assert repo.push(on_podman.remote(APP)).returncode == 0
    probe = "test -t 0 && echo tty-yes; sleep 0.5; stty size"
    run = tty_verb(on_podman, alice, "run", APP, "sh", "-c", probe)
    assert run.returncode == 0 and "tty-yes" in run.stdout and "24 80" in run.stdout, run
    enter = tty_verb(on_podman, alice, "enter", APP, "sh", "-c", "test -t 0 && echo in; exit 5")
    assert enter.returncode == 5 and "in" in enter.stdout, enter


def test_client_mode_run_from_a_terminal_gets_a_pty(
    server: Server, keys: dict[str, Key], workdir: Path, tmp_path: Path
) -> None:
    """`rivetr-git run APP CMD` in a checkout, on a terminal (a pty of the test's, 30x100):
    the command has a terminal of that size, and Ctrl-C reaches it, as with ssh -t."""
    alice = keys["alice"]
    _deployed(server, alice, workdir)
    checkout = AppRepo(workdir / "checkout", alice)
    checkout.git("remote", "add", "rivetr", server.remote(APP))
    host_key = server.data_dir / "ssh_host_ed25519_key.pub"
    home = make_home(tmp_path, alice, [(f"[127.0.0.1]:{server.ssh_port}", host_key)])
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    script = "test -t 0 && echo tty-yes; sleep 0.5; stty size; echo ready; sleep 60"
    client = subprocess.Popen(
        [sys.executable, "-m", "rivetr_git.cli.main", "run", "sh", "-c", script],
        cwd=checkout.path,
        env=cli_env(home),
        stdin=secondary,
        stdout=secondary,
        stderr=subprocess.PIPE,
    )
    os.close(secondary)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in seen and time.monotonic() < deadline:
            if select.select([primary], [], [], 1)[0]:
                seen += os.read(primary, 4096)
        assert b"tty-yes" in seen and b"30 100" in seen, seen
        os.write(primary, b"\x03")  # the local terminal is raw: Ctrl-C is a byte for the server
        assert client.wait(20) == 130
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        os.close(primary)


def test_other_verbs_under_t_end_lines_for_a_raw_terminal(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    _deployed(server, alice, workdir)
    raw = subprocess.run(
        [*_ssh(server, alice, "-tt"), f"domains:list {APP}"],
        capture_output=True,
        timeout=60,
        input=b"",
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == f"{APP}.localhost  (always)\r\n".encode()


async def test_enter_without_a_command_is_an_interactive_shell(
    server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    await asyncio.to_thread(_deployed, server, alice, workdir)
    async with asyncssh.connect(
        "127.0.0.1",
        server.ssh_port,
        username="git",
        known_hosts=None,
        client_keys=[str(alice.private)],
    ) as conn:
        process = await conn.create_process(
            f"enter {APP}", term_type="xterm", term_size=(80, 24), encoding=None
        )
        process.stdin.write(b"echo answer=$((6*7))\r")
        process.stdin.write(b"exit 9\r")
        result = await asyncio.wait_for(process.wait(), 20)
    assert isinstance(result.stdout, bytes)
    assert b"answer=42" in result.stdout
    assert result.exit_status == 9
