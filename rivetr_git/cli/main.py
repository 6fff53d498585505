"""The `rivetr-git` command line: the server itself, local administration, client mode.

command_line.py reads which verb an argv names (either spelling); this module sends it
where it runs (the server of a git remote, this machine's server, or, for the record
verbs while that server is down, in-process) and owns `serve`, `secrets rotate` and
`--help`. Errors are turned into messages and exit codes here, and only here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rivetr_git import __version__
from rivetr_git.admin.verbs import help_text
from rivetr_git.admin.verbs import parse as parse_verb
from rivetr_git.cli.parse import VerbCall, alias_help, parse_command_line
from rivetr_git.cli.remote import CLIENT_MODE_HELP, client_target, shape_argv
from rivetr_git.errors import RivetrError, ServerNotRunning, UsageHelp, ValidationError
from rivetr_git.settings import Settings, load_settings, settings_help
from rivetr_git.store.data_dir import make_private


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(
        config_file=getattr(args, "config", None),
        overrides={"data_dir": getattr(args, "data_dir", None), **overrides},
    )


# --- commands ----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(
        args,
        ssh_host=args.ssh_host,
        ssh_port=args.ssh_port,
        proxy_host=args.proxy_host,
        proxy_port=args.proxy_port,
    )
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("aiosqlite", "urllib3", "docker", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    from rivetr_git.daemon import Daemon  # heavy imports only for the server

    # The default loop, not uvloop: see receiver.server._ack_promptly (40 ms per push).
    asyncio.run(Daemon(settings).run())
    return 0


def daemon_command(settings: Settings, argv: list[str], stdin: str = "") -> int:
    """Run an admin verb in the local daemon (through its 0600 socket) as the server's own
    user, printing the output as it comes; return its exit code. Raises ServerNotRunning."""
    from rivetr_git.receiver.hook_socket import EXIT_MARK

    path = settings.data_dir / "run" / "hooks.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise ServerNotRunning(
            f"the rivetr-git server is not running with data dir {settings.data_dir} (these "
            "commands run in it); start it with `rivetr-git serve`, or pass --data-dir"
        ) from None
    code = 1
    # The socket sends a failed verb's message last, as "rivetr-git: ..." lines in the one
    # stream; hold them until the exit status says it failed, then they go to stderr, as
    # over SSH and in-process.
    held: list[str] = []
    with sock, sock.makefile("rwb") as stream:
        stream.write(json.dumps({"command": argv, "stdin": stdin}).encode() + b"\n")
        stream.flush()
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(EXIT_MARK):
                code = int(line.removeprefix(EXIT_MARK))
            elif held or line.startswith("rivetr-git: "):
                held.append(line)
            else:
                print(line, flush=True)
    if held:
        print("\n".join(held), file=sys.stderr if code else sys.stdout, flush=True)
    return code


class _Terminal:
    """The session of a verb run in-process: this process's stdout, and the input given."""

    def __init__(self, stdin: str) -> None:
        self._stdin = stdin.encode()

    async def out(self, line: str) -> None:
        print(line, flush=True)

    async def out_bytes(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    async def read_input(self, limit: int) -> bytes:
        return self._stdin[:limit]


# Verbs whose stdin or stdout is a binary dump: the daemon socket carries text lines.
_BYTE_STREAMS = {"services:export": "> dump", "services:import": "< dump"}


def run_local(call: VerbCall) -> int:
    """A verb on this machine's server, or in-process while it is down (record verbs)."""
    settings = load_settings(
        config_file=Path(call.config) if call.config else None,
        overrides={"data_dir": call.data_dir},
    )
    argv = shape_argv(call.verb, call.app, call.args) if call.app else [call.verb.name, *call.args]
    parse_verb(argv)  # usage errors and --help need no server
    if call.verb.name in _BYTE_STREAMS:
        raise ValidationError(
            f"{call.verb.name} streams a dump as bytes, which the local command line does not "
            f"carry; run it over SSH: ssh -p {settings.ssh_port} git@HOST "
            f"{call.verb.name} {' '.join(argv[1:])} {_BYTE_STREAMS[call.verb.name]}"
        )
    stdin = _stdin_of(call)
    try:
        return daemon_command(settings, argv, stdin)
    except ServerNotRunning:
        from rivetr_git.admin.offline import RECORD_VERBS, run_offline

        if call.verb.name not in RECORD_VERBS:
            raise
    return asyncio.run(run_offline(settings, argv, _Terminal(stdin)))


def _stdin_of(call: VerbCall) -> str:
    """keys:add reads the key: from `keys add NAME FILE`'s FILE, else a piped stdin."""
    if call.stdin_file not in (None, "-"):
        try:
            return Path(str(call.stdin_file)).read_text()
        except OSError as exc:
            raise RivetrError(f"cannot read {call.stdin_file}: {exc.strerror}") from None
    if call.verb.name == "keys:add" and (call.stdin_file == "-" or not sys.stdin.isatty()):
        return sys.stdin.read()
    return ""


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    from rivetr_git.secrets.master_key import rotate

    settings = _settings(args)
    make_private(settings.data_dir)
    count = asyncio.run(rotate(settings.data_dir, settings.db_path))
    print(
        f"re-encrypted {count} env var value{'' if count == 1 else 's'} under a new master "
        f"key ({settings.data_dir / 'master.key'}); the old key is gone: replace any "
        "backup of the key file with the new one"
    )
    return 0


# --- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a sub-command's copy of an option must not reset what came before it.
    common.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML settings file (default: none)",
    )
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="data directory (default: ./data, or RIVETR_DATA_DIR)",
    )

    parser = argparse.ArgumentParser(
        prog="rivetr-git",
        description="Self-hosted push-to-deploy: `git push` over SSH builds and runs your app\n"
        "in a container behind a built-in reverse proxy.",
        parents=[common],
        epilog="Admin commands (run in the server started from the same data dir; the ones "
        "that need only the database also run while it is stopped; over SSH they are "
        "`ssh -p PORT git@HOST COMMAND`):\n"
        + help_text().partition("\n")[2]
        + "\n\nOlder spellings of some of them (always this machine's data dir):\n"
        + alias_help()
        + "\n\n"
        + CLIENT_MODE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rivetr-git {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(sub, common)
    _add_secrets(sub, common)

    return parser


Subparsers = Any  # argparse's _SubParsersAction is private


def _add_serve(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the SSH receiver, pipeline and proxy",
        description="Run the SSH receiver, deploy pipeline and reverse proxy in one process. "
        "Ctrl-C or SIGTERM stops it; app containers keep running.",
        epilog=settings_help()
        + "\n\nprecedence: defaults < --config file < RIVETR_* env vars < command-line flags",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--ssh-host", help="overrides ssh_host")
    serve.add_argument("--ssh-port", help="overrides ssh_port")
    serve.add_argument("--proxy-host", help="overrides proxy_host")
    serve.add_argument("--proxy-port", help="overrides proxy_port")
    serve.set_defaults(fn=cmd_serve)


def _add_secrets(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    secrets = sub.add_parser(
        "secrets",
        help="manage the master key of the env vars",
        description="The master key that encrypts env var values "
        "(AES-256-GCM), DATA_DIR/master.key.",
    )
    secrets_sub = secrets.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)
    rotate = secrets_sub.add_parser(
        "rotate",
        parents=[common],
        help="re-encrypt every env var under a new master key",
        description="Generate a new master key, re-encrypt every env var value (apps' and "
        "the copies kept by each release) in one transaction, then replace "
        "DATA_DIR/master.key. Safe to interrupt: the next start or rotation keeps whichever "
        "key the database matches. The server must be stopped (this refuses otherwise).",
    )
    rotate.set_defaults(fn=cmd_secrets_rotate)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        call = parse_command_line(argv)
        if call is None:  # serve, secrets rotate, --help, --version
            args = build_parser().parse_args(argv)
            code: int = args.fn(args)
            return code
        target = client_target(argv, os.environ) if call.alias is None else None
        if target is not None:  # a verb for the server of this checkout's `rivetr` remote
            from rivetr_git.cli.client import run_remote  # paramiko: only client mode pays for it

            return run_remote(target)
        return run_local(call)
    except UsageHelp as exc:
        print(exc)
        return 0
    except RivetrError as exc:
        print(f"rivetr-git: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
