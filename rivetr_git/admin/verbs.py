"""The admin verbs (`apps:info`, `config:set`, ...): one table that every edge parses with.

The SSH session, the local `rivetr-git` CLI and client mode all turn an argv into an
Invocation here, so a verb has the same arguments, usage and `--help` everywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from rivetr_git.admin import service_arguments as svc
from rivetr_git.admin import verb_arguments as arguments
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


VERBS: tuple[Verb, ...] = (
    Verb("apps:list", "list the apps you can see and what is live", per_app=False),
    Verb(
        "apps:create",
        "create an empty app (push to it, or give --git, to deploy)",
        per_app=True,
        admin_only=True,
        add_arguments=arguments.apps_create,
    ),
    Verb("apps:info", "settings, limits, health check, domains and live release", per_app=True),
    Verb(
        "apps:set",
        "change an app's settings (from its next deploy)",
        per_app=True,
        admin_only=True,
        add_arguments=arguments.apps_set,
    ),
    Verb(
        "apps:destroy",
        "remove an app: containers, images, repository, settings, env",
        per_app=True,
        admin_only=True,
        add_arguments=arguments.destroy,
    ),
    Verb(
        "config",
        "list env var names (values with --reveal)",
        per_app=True,
        add_arguments=arguments.config,
    ),
    Verb(
        "config:get", "print one env var's value", per_app=True, add_arguments=arguments.config_get
    ),
    Verb(
        "config:set",
        "set env vars and restart the app with them",
        per_app=True,
        add_arguments=arguments.config_set,
    ),
    Verb(
        "config:unset",
        "remove env vars and restart the app without them",
        per_app=True,
        add_arguments=arguments.config_unset,
    ),
    Verb(
        "limits:set",
        "set memory/cpu limits of the app's containers",
        per_app=True,
        add_arguments=arguments.assignments(
            "memory=SIZE cpu=CPUS ('' clears)", "memory=512m cpu=0.5"
        ),
    ),
    Verb(
        "checks:set",
        "set the health check",
        per_app=True,
        add_arguments=arguments.assignments(
            "path, timeout, interval, retries, start_period, live_interval (seconds between "
            "checks of the live app, 0 off) ('' resets)",
            "path=/health timeout=5 interval=1 retries=10 start_period=0 live_interval=30",
        ),
    ),
    Verb(
        "builds:set",
        "set how pushes are built: the build type and its options",
        per_app=True,
        add_arguments=arguments.assignments(
            "type (auto, dockerfile, compose, buildpack, railpack, pack, nixpacks, static), "
            "dockerfile, "
            "context, target, no_cache, publish_dir, compose_service; '' resets",
            "type=static publish_dir=dist",
        ),
    ),
    Verb(
        "compose:allow",
        "admin: bind mounts the app's compose file may use, exactly",
        per_app=True,
        admin_only=True,
        add_arguments=arguments.assignments(
            "binds=HOST:CONTAINER[:ro],... ('' removes them)", "binds=/srv/uploads:/uploads"
        ),
    ),
    Verb(
        "deploy:set",
        "set how the app deploys: commands before/after the switch, auto-rollback, branch, port",
        per_app=True,
        add_arguments=arguments.assignments(
            "pre, post (shell commands, in order; a key given again adds one), timeout "
            "(seconds), auto_rollback (true/false), branch (the deploy branch), port; '' clears",
            'pre="./manage.py migrate" pre="./seed" post="./notify.sh" auto_rollback=false',
        ),
    ),
    Verb(
        "storage:mount",
        "mount a volume into the app's containers (from their next start)",
        per_app=True,
        add_arguments=arguments.storage_mount,
    ),
    Verb(
        "storage:unmount",
        "stop mounting a path (the volume is kept)",
        per_app=True,
        add_arguments=arguments.storage_unmount,
    ),
    Verb("storage:list", "the app's mounts: volume, path, size", per_app=True),
    Verb(
        "domains:add",
        "serve the app on more hostnames",
        per_app=True,
        add_arguments=arguments.hosts,
    ),
    Verb(
        "domains:remove",
        "stop serving the app on hostnames",
        per_app=True,
        add_arguments=arguments.hosts,
    ),
    Verb("domains:list", "hostnames the app is served on", per_app=True),
    Verb(
        "certs",
        "the app's certificate: hostnames, issuer, expiry, source, last error",
        per_app=True,
    ),
    Verb(
        "certs:add",
        "install your own certificate: chain and key as one PEM on stdin",
        per_app=True,
    ),
    Verb(
        "certs:remove",
        "remove the app's certificate (and stop automatic renewal)",
        per_app=True,
    ),
    Verb(
        "certs:auto:enable",
        "get (now) and renew a certificate for all the app's hostnames from the ACME server",
        per_app=True,
    ),
    Verb(
        "certs:auto:disable",
        "stop renewing; the current certificate serves until it expires",
        per_app=True,
    ),
    Verb(
        "certs:set",
        "HTTPS policy of the app",
        per_app=True,
        add_arguments=arguments.assignments(
            "redirect (308 from http:// to https://), hsts (Strict-Transport-Security "
            "max-age, seconds); '' resets",
            "redirect=false hsts=31536000",
        ),
    ),
    Verb("ps:restart", "start a fresh container of the live release (zero downtime)", per_app=True),
    Verb(
        "ps", "every container of the app: process, release, state, uptime, restarts", per_app=True
    ),
    Verb(
        "ps:scale",
        "set how many containers of each process type run (applied now, kept)",
        per_app=True,
        add_arguments=arguments.assignments(
            "TYPE=N per Procfile process type (web, worker, ...; 0 stops a type "
            "other than web; a type not named runs 1)",
            "web=3 worker=2",
        ),
    ),
    Verb("ps:stop", "stop the app (the proxy answers 503 until ps:start)", per_app=True),
    Verb("ps:start", "start a stopped app again", per_app=True),
    Verb(
        "logs",
        "the app's cron job lines, then its container output",
        per_app=True,
        add_arguments=arguments.logs,
    ),
    Verb(
        "run",
        "run CMD in a new container of the live release (ssh -t: on a terminal); "
        "its exit code is yours",
        per_app=True,
        add_arguments=arguments.run,
    ),
    Verb(
        "enter",
        "run CMD (default sh) in a running container of the app (ssh -t: on a terminal)",
        per_app=True,
        add_arguments=arguments.enter,
    ),
    Verb("cron:list", "scheduled jobs ([[cron]]): next run, last exit code and time", per_app=True),
    Verb("deploys", "deployments, newest first", per_app=True, add_arguments=arguments.n),
    Verb(
        "deploys:cancel",
        "stop the app's running deploy now and drop its waiting ones (the live release stays)",
        per_app=True,
    ),
    Verb(
        "deploys:log",
        "the pipeline log of one deployment (what its push showed)",
        per_app=False,
        add_arguments=arguments.deployment,
    ),
    Verb(
        "notify:add",
        "send the app's events (no app: every app's) to a channel URL (Apprise)",
        per_app=False,
        add_arguments=arguments.notify_add,
    ),
    Verb(
        "notify:list",
        "notification channels of the app, or the server-wide ones (secrets masked)",
        per_app=False,
        add_arguments=arguments.notify_app,
    ),
    Verb(
        "notify:remove",
        "remove a notification channel",
        per_app=False,
        add_arguments=arguments.notify_remove,
    ),
    Verb(
        "notify:test",
        "send a test message to each channel of the app (or the server) and say how it went",
        per_app=False,
        add_arguments=arguments.notify_app,
    ),
    Verb("releases", "releases (what rollback can run), newest first", per_app=True),
    Verb(
        "rollback", "run an earlier release again", per_app=True, add_arguments=arguments.rollback
    ),
    Verb(
        "keys:add",
        "register a public key (the key itself on stdin)",
        per_app=False,
        admin_only=True,
        add_arguments=arguments.keys_add,
    ),
    Verb("keys:list", "registered keys", per_app=False, admin_only=True),
    Verb(
        "keys:remove",
        "remove a key (it stops working on its next command)",
        per_app=False,
        admin_only=True,
        add_arguments=arguments.key_name,
    ),
    Verb(
        "access:grant",
        "let a developer key push to and manage an app",
        per_app=False,
        admin_only=True,
        add_arguments=arguments.access,
    ),
    Verb(
        "access:revoke",
        "take that back",
        per_app=False,
        admin_only=True,
        add_arguments=arguments.access,
    ),
    *(
        Verb(name, summary, per_app=False, admin_only=True, add_arguments=add)
        for name, summary, add in (
            ("services:create", "start a postgres, redis or mariadb service", svc.create),
            ("services:list", "every service: kind, version, state, linked apps", lambda p: None),
            ("services:info", "one service: state, volume size, links, URL", svc.name),
            ("services:logs", "the service's output", svc.logs),
            ("services:link", "give an app the service's URL and restart it", svc.link),
            ("services:unlink", "take the URL away and restart the app", svc.link),
            ("services:expose", "publish the service on 127.0.0.1 (for a tunnel)", svc.expose),
            ("services:unexpose", "make the service private again", svc.name),
            ("services:destroy", "remove a service (its data only with --purge-data)", svc.destroy),
            ("services:backup", "write a backup now, or set the backup schedule", svc.backup),
            ("services:backups", "the service's backups, oldest first", svc.name),
            ("services:restore", "restore a backup into the service", svc.restore),
            ("services:export", "write a dump to stdout (ssh ... > dump)", svc.name),
            ("services:import", "restore a dump read from stdin (ssh ... < dump)", svc.import_),
            ("services:connect", "open the service's client (psql, ...; needs ssh -t)", svc.name),
        )
    ),
    Verb(
        "git:set",
        "where the app's code is fetched from",
        per_app=True,
        add_arguments=arguments.assignments(
            "url (https://, ssh:// or git@host:path), branch, token (HTTPS; stored "
            "encrypted; '' removes it)",
            "url=https://github.com/me/app.git branch=main token=ghp_...",
        ),
    ),
    Verb("git:key", "make the app's SSH deploy key and print its public half", per_app=True),
    Verb(
        "git:webhook",
        "the webhook URLs and secret to give the git host",
        per_app=True,
        add_arguments=arguments.rotate,
    ),
    Verb(
        "deploy",
        "fetch from the git host and deploy now",
        per_app=True,
        add_arguments=arguments.deploy,
    ),
    Verb(
        "tokens:create",
        "make an HTTP API token (shown once)",
        per_app=False,
        admin_only=True,
        add_arguments=arguments.tokens_create,
    ),
    Verb("tokens:list", "HTTP API tokens", per_app=False, admin_only=True),
    Verb(
        "tokens:revoke",
        "remove an HTTP API token (it stops working at once)",
        per_app=False,
        admin_only=True,
        add_arguments=arguments.token_name,
    ),
    Verb("help", "this list, or one verb's usage", per_app=False, add_arguments=arguments.help),
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
