"""The `rivetr-git` command line: the server itself and local administration.

Errors are turned into messages and exit codes here, and only here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rivetr_git import __version__
from rivetr_git.admin.app_settings import parse_assignments
from rivetr_git.admin.render import table
from rivetr_git.admin.verbs import help_text
from rivetr_git.admin.verbs import parse as parse_verb
from rivetr_git.errors import RivetrError, UsageHelp
from rivetr_git.models import App, Role
from rivetr_git.names import validate_app_name, validate_key_name
from rivetr_git.remote import CLIENT_MODE_HELP, client_target
from rivetr_git.settings import Settings, load_settings, settings_help
from rivetr_git.store.data_dir import make_private
from rivetr_git.store.database import Store
from rivetr_git.terminal import neutralise


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(
        config_file=getattr(args, "config", None),
        overrides={"data_dir": getattr(args, "data_dir", None), **overrides},
    )


async def _with_store(args: argparse.Namespace, fn: Callable[[Store], Awaitable[int]]) -> int:
    settings = _settings(args)
    make_private(settings.data_dir)  # this may create the database
    store = await Store.open(settings.db_path)
    try:
        return await fn(store)
    finally:
        await store.close()


# --- commands ----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(
        args, ssh_host=args.ssh_host, ssh_port=args.ssh_port, proxy_host=args.proxy_host,
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


def cmd_keys_add(args: argparse.Namespace) -> int:
    name = validate_key_name(args.name)
    if args.pubkey_file == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.pubkey_file).read_text()
        except OSError as exc:
            raise RivetrError(f"cannot read {args.pubkey_file}: {exc.strerror}") from None
    from rivetr_git.admin.ssh_keys import parse_public_key  # asyncssh: not on every command's path

    key = parse_public_key(text)
    role = Role.ADMIN if args.admin else Role.DEVELOPER

    async def run(store: Store) -> int:
        await store.add_key(name, key.fingerprint, key.openssh, role)
        print(f"added key '{name}' ({role.value}) {key.fingerprint}")
        return 0

    return asyncio.run(_with_store(args, run))


def cmd_keys_list(args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        keys = await store.list_keys()
        if not keys:
            print("no keys; add one with `rivetr-git keys add NAME ~/.ssh/id_ed25519.pub --admin`")
            return 0
        print(table([(k.name, k.role.value, k.fingerprint, k.created_at) for k in keys],
                     ("NAME", "ROLE", "FINGERPRINT", "ADDED")))
        return 0

    return asyncio.run(_with_store(args, run))


def cmd_keys_remove(args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        await store.remove_key(args.name)
        print(f"removed key '{args.name}'")
        return 0

    return asyncio.run(_with_store(args, run))


def cmd_access_grant(args: argparse.Namespace) -> int:
    app = validate_app_name(args.app)

    async def run(store: Store) -> int:
        await store.grant(args.key, app)
        print(f"key '{args.key}' may now push to '{app}'")
        return 0

    return asyncio.run(_with_store(args, run))


def cmd_apps_list(args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        rows = []
        for app in await store.list_apps():
            current = await store.current_deployment(app)
            live = f"#{current.id} {current.commit_sha[:7]}" if current else "-"
            if app.crashed_reason:
                live += " (crashed)"
            rows.append((app.name, live, app.created_at))
        if not rows:
            print("no apps yet; an admin key's first `git push` creates one")
            return 0
        print(table(rows, ("APP", "LIVE", "CREATED")))
        return 0

    return asyncio.run(_with_store(args, run))


def cmd_apps_set(args: argparse.Namespace) -> int:
    name = validate_app_name(args.app)
    values = parse_assignments(args.assignments)

    async def run(store: Store) -> int:
        app = await store.update_app(name, **values)
        print(_app_settings(app))
        print("takes effect on the next deploy")
        return 0

    return asyncio.run(_with_store(args, run))


def cmd_apps_show(args: argparse.Namespace) -> int:
    name = validate_app_name(args.app)

    async def run(store: Store) -> int:
        app = await store.get_app(name)
        current = await store.current_deployment(app)
        print(_app_settings(app))
        print(f"live: #{current.id} {current.commit_sha[:7]} on 127.0.0.1:{current.host_port}"
              if current else "live: nothing deployed")
        if app.crashed_reason:
            print(f"crashed: {neutralise(app.crashed_reason)} (the proxy answers 503 until "
                  "the next deploy)")
        return 0

    return asyncio.run(_with_store(args, run))


def _app_settings(app: App) -> str:
    return "\n".join((
        f"app: {app.name}",
        f"dockerfile: {app.dockerfile}",
        f"port: {app.port if app.port is not None else '(image EXPOSE, else 5000)'}",
        f"health_path: {app.health_path if app.health_path is not None else '(server default)'}",
        f"deploy_branch: {app.deploy_branch or '(server default)'}",
        f"webhook_url: {app.webhook_url or '(none; the server webhook_url still applies)'}",
        f"build_type: {app.build_type or 'auto (detected on each push)'}",
        f"build_context: {app.build_context or '(repository root)'}",
        f"build_target: {app.build_target or '(last stage)'}",
        f"build_no_cache: {'true' if app.build_no_cache else 'false'}",
        f"publish_dir: {app.publish_dir or '(detected)'}",
        f"compose_service: {app.compose_service or '(detected)'}",
        f"compose_binds: {app.compose_binds or '(none; an admin sets them with compose:allow)'}",
    ))


def cmd_deploys_list(args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        app = await store.get_app(validate_app_name(args.app))
        rows = [
            (f"#{d.id}", d.status.value, d.commit_sha[:7], d.commit_message[:40], d.created_at,
             d.error_message or "")
            for d in await store.list_deployments(app, limit=args.limit)
        ]
        print(table(rows, ("ID", "STATUS", "COMMIT", "MESSAGE", "CREATED", "ERROR")))
        return 0

    return asyncio.run(_with_store(args, run))


def daemon_command(settings: Settings, argv: list[str]) -> int:
    """Run an admin verb in the local daemon (through its 0600 socket) as the server's own
    user, printing the output as it comes; return its exit code."""
    from rivetr_git.receiver.hook_socket import EXIT_MARK

    stdin = ""
    if argv[:1] == ["keys:add"] and not sys.stdin.isatty():
        stdin = sys.stdin.read()
    path = settings.data_dir / "run" / "hooks.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        raise RivetrError(
            f"the rivetr-git server is not running with data dir {settings.data_dir} (these "
            "commands run in it); start it with `rivetr-git serve`, or pass --data-dir"
        ) from None
    code = 1
    with sock, sock.makefile("rwb") as stream:
        stream.write(json.dumps({"command": argv, "stdin": stdin}).encode() + b"\n")
        stream.flush()
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(EXIT_MARK):
                code = int(line.removeprefix(EXIT_MARK))
            else:
                print(line, flush=True)
    return code


_GLOBAL_OPTIONS = ("--config", "--data-dir")


def split_verb(argv: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """`[--data-dir D] VERB ARGS...` -> (global options, [VERB, ARGS...]); None if argv does
    not name an admin verb."""
    from rivetr_git.admin.verbs import BY_NAME

    i = 0
    while i < len(argv):
        if argv[i] in _GLOBAL_OPTIONS:
            i += 2
        elif argv[i].startswith(tuple(o + "=" for o in _GLOBAL_OPTIONS)):
            i += 1
        else:
            break
    rest = list(argv[i:])
    # The older local forms read the database directly and work without the server:
    # `deploys list APP` and `logs DEPLOYMENT_ID` (a deployment's pipeline log).
    if rest[:2] == ["deploys", "list"] or (rest[:1] == ["logs"] and rest[1:2]
                                           and rest[1].isdigit()):
        return None
    if rest and rest[0] in BY_NAME:
        return list(argv[:i]), rest
    return None


def run_local_verb(options: list[str], verb_argv: list[str]) -> int:
    """An admin verb on this machine's server (`rivetr-git config:set APP K=V`)."""
    parser = argparse.ArgumentParser(prog="rivetr-git", add_help=False)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(options)
    parse_verb(verb_argv)  # usage errors and --help need no server
    return daemon_command(_settings(args), verb_argv)


def cmd_logs(args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        for line in await store.get_logs(args.deployment_id):
            print(neutralise(line.line, keep_style=True))  # rows stored by older versions are raw
        return 0

    return asyncio.run(_with_store(args, run))


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    from rivetr_git.secrets.master_key import rotate

    settings = _settings(args)
    make_private(settings.data_dir)
    count = asyncio.run(rotate(settings.data_dir, settings.db_path))
    print(f"re-encrypted {count} env var value{'' if count == 1 else 's'} under a new master "
          f"key ({settings.data_dir / 'master.key'}); the old key is gone: replace any "
          "backup of the key file with the new one")
    return 0


# --- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a sub-command's copy of an option must not reset what came before it.
    common.add_argument("--config", type=Path, metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML settings file (default: none)")
    common.add_argument("--data-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="data directory (default: ./data, or RIVETR_DATA_DIR)")

    parser = argparse.ArgumentParser(
        prog="rivetr-git",
        description="Self-hosted push-to-deploy: `git push` over SSH builds and runs your app\n"
        "in a container behind a built-in reverse proxy.",
        parents=[common],
        epilog="Admin commands (run in the server started from the same data dir; over SSH "
        "they are `ssh -p PORT git@HOST COMMAND`):\n"
        + help_text().partition("\n")[2] + "\n\n" + CLIENT_MODE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rivetr-git {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve", parents=[common], help="run the SSH receiver, pipeline and proxy",
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

    keys = sub.add_parser("keys", help="manage SSH keys allowed to push",
                          description="Manage the SSH public keys allowed to push.")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    add = keys_sub.add_parser("add", parents=[common], help="register a public key",
                              description="Register a public key. Admin keys may create apps "
                              "by pushing; other keys push only to apps granted to them.")
    add.add_argument("name", help="a name for the key, e.g. alice")
    add.add_argument("pubkey_file", help="OpenSSH public key file, or - for stdin")
    add.add_argument("--admin", action="store_true", help="give the key the admin role")
    add.set_defaults(fn=cmd_keys_add)
    lst = keys_sub.add_parser("list", parents=[common], help="list registered keys",
                              description="List registered keys with role and fingerprint.")
    lst.set_defaults(fn=cmd_keys_list)
    rm = keys_sub.add_parser("remove", parents=[common], help="remove a key",
                             description="Remove a key; it stops working on its next command.")
    rm.add_argument("name")
    rm.set_defaults(fn=cmd_keys_remove)

    access = sub.add_parser("access", help="grant keys access to apps",
                            description="Grant a non-admin key access to an app.")
    access_sub = access.add_subparsers(dest="access_command", metavar="ACTION", required=True)
    grant = access_sub.add_parser("grant", parents=[common], help="let KEY push to APP",
                                  description="Let a developer key push to an existing app.")
    grant.add_argument("key")
    grant.add_argument("app")
    grant.set_defaults(fn=cmd_access_grant)

    apps = sub.add_parser("apps", help="list apps, show and change their settings",
                          description="Apps on this server.")
    apps_sub = apps.add_subparsers(dest="apps_command", metavar="ACTION", required=True)
    apps_list = apps_sub.add_parser("list", parents=[common], help="list apps and what is live",
                                    description="List apps with their live deployment.")
    apps_list.set_defaults(fn=cmd_apps_list)
    apps_show = apps_sub.add_parser("show", parents=[common], help="show an app's settings",
                                    description="Show an app's settings and live release.")
    apps_show.add_argument("app")
    apps_show.set_defaults(fn=cmd_apps_show)
    apps_set = apps_sub.add_parser(
        "set", parents=[common], help="change an app's settings",
        description="Change an app's settings; they apply from its next deploy. Keys: "
        "dockerfile=PATH (in the repo), port=N (the app's port inside the container), "
        "health_path=/PATH (must answer 2xx/3xx), deploy_branch=NAME, webhook_url=URL "
        "(gets this app's events), build_type=auto|dockerfile|compose|railpack|pack|nixpacks|"
        "static, build_context=DIR, build_target=STAGE, build_no_cache=true|false, "
        "publish_dir=DIR (static sites), compose_service=NAME. An empty value "
        "(e.g. port=) resets to the default.",
    )
    apps_set.add_argument("app")
    apps_set.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    apps_set.set_defaults(fn=cmd_apps_set)

    deploys = sub.add_parser("deploys", help="list an app's deployments",
                             description="Deployments of an app, newest first.")
    deploys_sub = deploys.add_subparsers(dest="deploys_command", metavar="ACTION", required=True)
    dlist = deploys_sub.add_parser("list", parents=[common], help="list deployments of APP",
                                   description="List deployments of APP, newest first.")
    dlist.add_argument("app")
    dlist.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    dlist.set_defaults(fn=cmd_deploys_list)


    secrets = sub.add_parser("secrets", help="manage the master key of the env vars",
                             description="The master key that encrypts env var values "
                             "(AES-256-GCM), DATA_DIR/master.key.")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)
    rotate = secrets_sub.add_parser(
        "rotate", parents=[common], help="re-encrypt every env var under a new master key",
        description="Generate a new master key, re-encrypt every env var value (apps' and "
        "the copies kept by each release) in one transaction, then replace "
        "DATA_DIR/master.key. Safe to interrupt: the next start or rotation keeps whichever "
        "key the database matches. The server must be stopped (this refuses otherwise).")
    rotate.set_defaults(fn=cmd_secrets_rotate)

    logs = sub.add_parser("logs", parents=[common], help="show a deployment's pipeline log",
                          description="Print the stored pipeline log of one deployment "
                          "(the lines its push showed).")
    logs.add_argument("deployment_id", type=int, metavar="DEPLOYMENT_ID")
    logs.set_defaults(fn=cmd_logs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        target = client_target(argv, os.environ)
        if target is not None:  # a verb for the server of this checkout's `rivetr` remote
            from rivetr_git.client import run_remote  # paramiko: only client mode pays for it

            return run_remote(target)
        # Local mode: this machine's data dir.
        verb = split_verb(argv)
        if verb is not None:
            return run_local_verb(*verb)
        args = build_parser().parse_args(argv)
        code: int = args.fn(args)
    except UsageHelp as exc:
        print(exc)
        return 0
    except RivetrError as exc:
        print(f"rivetr-git: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
