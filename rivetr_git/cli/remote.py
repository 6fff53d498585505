"""Client mode's plan: which command line goes to which server, for which app.

`rivetr-git config:set K=V` inside an app's checkout runs the verb on the server the
checkout's `rivetr` git remote points at. This module decides whether a command line is
meant for a server and shapes what is sent (command_line.py parses it; `client.py` does
the SSH part).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rivetr_git.admin.verbs import Verb
from rivetr_git.cli.parse import parse_verb_call
from rivetr_git.errors import ValidationError
from rivetr_git.names import validate_app_name

DEFAULT_REMOTE = "rivetr"
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")
# scp-like syntax as git reads it: [user@]host:path, the host possibly in [brackets].
_SCP = re.compile(r"(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]/]+\]|[^:/\[\]]+):(?P<path>.*)")

CLIENT_MODE_HELP = f"""\
client mode (like the Heroku CLI): inside an app's checkout with a '{DEFAULT_REMOTE}' git remote,
  rivetr-git VERB [ARGS...]   runs VERB for that app on the server, over SSH; e.g.
                              config:set KEY=VALUE, logs -f, releases (`help` lists them all)
  --remote NAME               use git remote NAME instead of '{DEFAULT_REMOTE}'
  --app NAME                  act on app NAME instead of the one in the remote's URL
It logs in with your ssh-agent, ~/.ssh/id_* and ~/.ssh/config, trusts only the host keys in
~/.ssh/known_hosts, and exits with the verb's exit status (255: could not connect or log in).
--data-dir, --config or RIVETR_DATA_DIR mean this machine's server (local mode) instead."""


@dataclass(frozen=True)
class RemoteUrl:
    """Where an SSH git remote points. None: not in the URL (~/.ssh/config or defaults)."""

    host: str
    port: int | None
    user: str | None
    path: str


@dataclass(frozen=True)
class Target:
    """One verb to run on one server: what client.py needs to connect and what it sends."""

    remote: str  # the git remote's name, for messages
    url: RemoteUrl
    command: str  # the exec request, e.g. "config:set hello 'K=a b'"


def client_target(
    argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None
) -> Target | None:
    """The server command `argv` asks for, or None for local mode.

    Client mode: the first non-option word is a verb, and either `--remote NAME` is given,
    or no data dir is named (--data-dir, --config, RIVETR_DATA_DIR) and the checkout
    around `cwd` has a `rivetr` remote. Raises ValidationError for a bad remote or app.
    """
    call = parse_verb_call(argv)
    if call is None:
        return None
    if call.remote is not None and call.local:
        raise ValidationError(
            "--remote sends the command to a server; --data-dir and --config "
            "are for this machine's server: give one or the other"
        )
    if call.remote is None and (call.local or env.get("RIVETR_DATA_DIR")):
        return None
    name = call.remote or DEFAULT_REMOTE
    raw = git_remote_url(name, cwd, required=call.remote is not None)
    if raw is None:
        return None
    url = parse_remote_url(raw, name)
    app = call.app if call.app is not None else _app_from_url(url, raw, name, call.verb)
    return Target(remote=name, url=url, command=shlex.join(shape_argv(call.verb, app, call.args)))


def _app_from_url(url: RemoteUrl, raw: str, remote: str, verb: Verb) -> str | None:
    if not verb.per_app:
        return None
    try:
        return app_from_path(url.path)
    except ValidationError as exc:
        raise ValidationError(
            f"git remote {remote!r} ({raw}) does not name an app: {exc}; pass --app NAME"
        ) from None


def shape_argv(verb: Verb, app: str | None, args: Sequence[str]) -> list[str]:
    """The verb's argv as the server parses it: the app goes right after a per-app verb."""
    if not verb.per_app:
        return [verb.name, *args]
    if app is None:
        raise ValidationError(f"{verb.name} needs an app: pass --app NAME")
    return [verb.name, validate_app_name(app), *args]


def git_remote_url(name: str, cwd: str | None = None, required: bool = False) -> str | None:
    """The URL of git remote `name` of the checkout around `cwd`. None when there is no
    checkout or no such remote, unless `required`: then ValidationError says which."""
    try:
        result = subprocess.run(
            ["git", "remote", "get-url", "--", name],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        if required:
            raise ValidationError(f"cannot run git to read remote {name!r}: {exc}") from None
        return None
    if result.returncode == 0 and result.stdout.strip():
        return result.stdout.strip()
    if required:
        why = result.stderr.strip().removeprefix("fatal: ").removeprefix("error: ")
        raise ValidationError(
            f"--remote {name}: {why or 'no such git remote'} "
            "(`git remote -v` lists this checkout's remotes)"
        )
    return None


def parse_remote_url(raw: str, remote: str = DEFAULT_REMOTE) -> RemoteUrl:
    """Parse an SSH git URL: ssh://[user@]host[:port]/path or scp-like [user@]host:path."""
    if "://" in raw:
        parts = urllib.parse.urlsplit(raw)
        if parts.scheme.lower() in _SSH_SCHEMES and parts.hostname:
            try:
                port = parts.port
            except ValueError:
                raise ValidationError(f"git remote {remote!r} ({raw}) has a bad port") from None
            user = urllib.parse.unquote(parts.username) if parts.username else None
            return RemoteUrl(
                host=parts.hostname, port=port, user=user, path=urllib.parse.unquote(parts.path)
            )
    else:
        match = _SCP.fullmatch(raw)
        # git reads "C:/x" or "./a:b" as a local path, not as a host.
        if match and len(match["host"]) > 1:
            host, port = match["host"], None
            if host.startswith("[") and host.count(":") == 1:  # git's [host:port]:path
                host, _, number = host.partition(":")
                port = int(number[:-1]) if number[:-1].isdigit() else None
            return RemoteUrl(
                host=host.strip("[]"), port=port, user=match["user"], path=match["path"]
            )
    raise ValidationError(
        f"git remote {remote!r} is {raw!r}, not an SSH URL; client mode needs one like "
        "ssh://git@HOST:2222/APP or git@HOST:APP"
    )


def app_from_path(path: str) -> str:
    """The app a remote path names: APP, APP.git, /APP or /APP.git (as the server reads it)."""
    return validate_app_name(path.removeprefix("/").removesuffix(".git"))
