"""The admin verbs (`apps:info`, `config:set`, ...): one table that every edge parses with.

The SSH session, the local `rivetr-git` CLI and client mode all turn an argv into an
Invocation here, so a verb has the same arguments, usage and `--help` everywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from rivetr_git.errors import UsageHelp, ValidationError
from rivetr_git.names import validate_app_name


class VerbParser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting (it runs inside the daemon)."""

    def error(self, message: str) -> NoReturn:
        if self.prog.endswith("config:set") and "unrecognized arguments" in message:
            # They may be values typed as options (`--x=secret`): never echo them.
            message = "unrecognized arguments (not shown: they may hold values)"
        raise ValidationError(
            f"{message}\n{self.format_usage().rstrip()}\n`{self.prog} --help` explains it"
        )

    def print_help(self, file: object = None) -> None:
        raise UsageHelp(self.format_help().rstrip())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ValidationError(message or f"usage: {self.format_usage()}")


@dataclass(frozen=True)
class Verb:
    name: str
    summary: str
    per_app: bool  # the first argument is the app, and the caller needs access to it
    admin_only: bool = False
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None


@dataclass(frozen=True)
class Invocation:
    verb: Verb
    app: str | None  # validated; None for verbs that are not about one app
    args: argparse.Namespace


def _n(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n", "--lines", type=int, default=None, metavar="N", help="how many lines/entries to show"
    )


def _assignments(what: str, example: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "assignments", nargs="+", metavar="KEY=VALUE", help=f"{what}, e.g. {example}"
        )

    return add


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reveal", action="store_true", help="show the values too, not just names")


def _config_get(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="KEY")


def _config_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "assignments",
        nargs="+",
        metavar="KEY=VALUE",
        help="values may hold spaces, quotes, '=', newlines and UTF-8 (quote them for your shell)",
    )
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="store only; the next deploy or restart picks the values up",
    )


def _config_unset(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="KEY")
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="store only; the next deploy or restart picks the change up",
    )


def _destroy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--confirm",
        metavar="APP",
        default=None,
        help="the app's name again: destroying removes its containers, images, "
        "repository, settings and env for good",
    )


def _hosts(p: argparse.ArgumentParser) -> None:
    p.add_argument("hosts", nargs="+", metavar="HOSTNAME", help="e.g. www.example.com")


def _logs(p: argparse.ArgumentParser) -> None:
    _n(p)
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep streaming new output until you press Ctrl-C",
    )


def _run(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="CMD ...",
        help="the command and its arguments (no shell unless you run sh -c '...')",
    )


def _release_number(value: str) -> int:
    digits = value.removeprefix("#")
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a release number such as 12; `releases APP` lists them"
        )
    return int(digits)


def _rollback(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "release",
        nargs="?",
        default=None,
        metavar="RELEASE",
        type=_release_number,
        help="release number from `releases APP` (default: the one before the live one)",
    )


def _keys_add(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="a name for the key, e.g. alice")
    p.add_argument("--admin", action="store_true", help="give the key the admin role")


def _key_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the key's name (see keys:list)")


def _access(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", metavar="KEY", help="the key's name (see keys:list)")
    p.add_argument("app_name", metavar="APP")


def _deployment_number(value: str) -> int:
    digits = value.removeprefix("#")
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a deployment number such as 12; `deploys APP` lists them"
        )
    return int(digits)


def _deployment(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "deployment",
        type=_deployment_number,
        metavar="DEPLOYMENT",
        help="a deployment's number from `deploys APP`",
    )


def _apps_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "assignments",
        nargs="+",
        metavar="KEY=VALUE",
        help="dockerfile=PATH (in the repo), port=N (the app's port in the "
        "container), health_path=/PATH (must answer 2xx/3xx), deploy_branch=NAME, "
        "webhook_url=URL (gets this app's events), build_type=auto|dockerfile|"
        "compose|railpack|pack|nixpacks|static, build_context=DIR, "
        "build_target=STAGE, build_no_cache=true|false, publish_dir=DIR (static "
        "sites), compose_service=NAME; an empty value (port=) resets to the default",
    )


def _help(p: argparse.ArgumentParser) -> None:
    p.add_argument("topic", nargs="?", default=None, metavar="VERB")


VERBS: tuple[Verb, ...] = (
    Verb("apps:list", "list the apps you can see and what is live", per_app=False),
    Verb(
        "apps:create", "create an empty app (push to it to deploy)", per_app=True, admin_only=True
    ),
    Verb("apps:info", "settings, limits, health check, domains and live release", per_app=True),
    Verb(
        "apps:set",
        "change an app's settings (from its next deploy)",
        per_app=True,
        admin_only=True,
        add_arguments=_apps_set,
    ),
    Verb(
        "apps:destroy",
        "remove an app: containers, images, repository, settings, env",
        per_app=True,
        admin_only=True,
        add_arguments=_destroy,
    ),
    Verb(
        "config", "list env var names (values with --reveal)", per_app=True, add_arguments=_config
    ),
    Verb("config:get", "print one env var's value", per_app=True, add_arguments=_config_get),
    Verb(
        "config:set",
        "set env vars and restart the app with them",
        per_app=True,
        add_arguments=_config_set,
    ),
    Verb(
        "config:unset",
        "remove env vars and restart the app without them",
        per_app=True,
        add_arguments=_config_unset,
    ),
    Verb(
        "limits:set",
        "set memory/cpu limits of the app's containers",
        per_app=True,
        add_arguments=_assignments("memory=SIZE cpu=CPUS ('' clears)", "memory=512m cpu=0.5"),
    ),
    Verb(
        "checks:set",
        "set the health check",
        per_app=True,
        add_arguments=_assignments(
            "path, timeout, interval, retries, start_period ('' resets)",
            "path=/health timeout=5 interval=1 retries=10 start_period=0",
        ),
    ),
    Verb(
        "builds:set",
        "set how pushes are built: the build type and its options",
        per_app=True,
        add_arguments=_assignments(
            "type (auto, dockerfile, compose, railpack, pack, nixpacks, static), dockerfile, "
            "context, target, no_cache, publish_dir, compose_service; '' resets",
            "type=static publish_dir=dist",
        ),
    ),
    Verb(
        "compose:allow",
        "admin: bind mounts the app's compose file may use, exactly",
        per_app=True,
        admin_only=True,
        add_arguments=_assignments(
            "binds=HOST:CONTAINER[:ro],... ('' removes them)", "binds=/srv/uploads:/uploads"
        ),
    ),
    Verb(
        "deploy:set",
        "set commands run in the new container before/after the switch",
        per_app=True,
        add_arguments=_assignments(
            "pre, post (shell commands), timeout (seconds); '' clears",
            'pre="./manage.py migrate" post="./notify.sh" timeout=120',
        ),
    ),
    Verb("domains:add", "serve the app on more hostnames", per_app=True, add_arguments=_hosts),
    Verb("domains:remove", "stop serving the app on hostnames", per_app=True, add_arguments=_hosts),
    Verb("domains:list", "hostnames the app is served on", per_app=True),
    Verb("ps:restart", "start a fresh container of the live release (zero downtime)", per_app=True),
    Verb(
        "ps", "every container of the app: process, release, state, uptime, restarts", per_app=True
    ),
    Verb(
        "ps:scale",
        "set how many containers of each process type run (applied now, kept)",
        per_app=True,
        add_arguments=_assignments(
            "TYPE=N per Procfile process type (web, worker, ...; 0 stops a type "
            "other than web; a type not named runs 1)",
            "web=3 worker=2",
        ),
    ),
    Verb("ps:stop", "stop the app (the proxy answers 503 until ps:start)", per_app=True),
    Verb("ps:start", "start a stopped app again", per_app=True),
    Verb("logs", "the app's container output", per_app=True, add_arguments=_logs),
    Verb(
        "run",
        "run CMD in a new container of the live release; its exit code is yours",
        per_app=True,
        add_arguments=_run,
    ),
    Verb("deploys", "deployments, newest first", per_app=True, add_arguments=_n),
    Verb(
        "deploys:log",
        "the pipeline log of one deployment (what its push showed)",
        per_app=False,
        add_arguments=_deployment,
    ),
    Verb("releases", "releases (what rollback can run), newest first", per_app=True),
    Verb("rollback", "run an earlier release again", per_app=True, add_arguments=_rollback),
    Verb(
        "keys:add",
        "register a public key (the key itself on stdin)",
        per_app=False,
        admin_only=True,
        add_arguments=_keys_add,
    ),
    Verb("keys:list", "registered keys", per_app=False, admin_only=True),
    Verb(
        "keys:remove",
        "remove a key (it stops working on its next command)",
        per_app=False,
        admin_only=True,
        add_arguments=_key_name,
    ),
    Verb(
        "access:grant",
        "let a developer key push to and manage an app",
        per_app=False,
        admin_only=True,
        add_arguments=_access,
    ),
    Verb("access:revoke", "take that back", per_app=False, admin_only=True, add_arguments=_access),
    Verb("help", "this list, or one verb's usage", per_app=False, add_arguments=_help),
)
BY_NAME = {v.name: v for v in VERBS}


def verb_parser(verb: Verb, prog: str = "") -> VerbParser:
    parser = VerbParser(
        prog=(prog + " " if prog else "") + verb.name, description=verb.summary, add_help=True
    )
    if verb.per_app:
        parser.add_argument("app", metavar="APP")
    verb.add_arguments(parser)
    return parser


def parse(argv: Sequence[str]) -> Invocation:
    """Parse `VERB ARGS...`. Raises ValidationError with usage, or UsageHelp for --help."""
    if not argv:
        raise ValidationError(f"no command given\n{help_text()}")
    verb = BY_NAME.get(argv[0])
    if verb is None:
        raise ValidationError(f"unknown command {argv[0]!r}\n{help_text()}")
    args = verb_parser(verb).parse_args(list(argv[1:]))
    app = validate_app_name(args.app) if verb.per_app else None
    if verb.name == "help":
        raise UsageHelp(_help_for(args.topic))
    return Invocation(verb=verb, app=app, args=args)


def _help_for(topic: str | None) -> str:
    if topic is None:
        return help_text()
    verb = BY_NAME.get(topic)
    if verb is None:
        raise ValidationError(f"unknown command {topic!r}\n{help_text()}")
    return verb_parser(verb).format_help().rstrip()


def help_text() -> str:
    """Every verb with its usage line and what it does."""
    lines = ["Commands (`help VERB` or `VERB --help` for details):"]
    for verb in VERBS:
        usage = verb_parser(verb).format_usage().removeprefix("usage: ").strip()
        usage = " ".join(usage.replace(" [-h]", "").split())
        admin = " (admin)" if verb.admin_only else ""
        lines.append(f"  {usage}\n      {verb.summary}{admin}")
    return "\n".join(lines)
