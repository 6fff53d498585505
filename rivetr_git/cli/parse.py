"""The one command-line parser: which action a `rivetr-git` argv names, and for where.

Every admin action is a verb of the verb table (admin/verbs.py), and that table parses its
arguments everywhere: on the SSH server, in the local CLI and in client mode. This module
only reads what surrounds the verb:

    rivetr-git [--data-dir DIR | --config FILE | --remote NAME | --app NAME] WORDS...

    WORDS                          becomes                          runs
    VERB ARGS                      VERB ARGS                        client mode (a `rivetr`
                                                                    remote, no data dir named),
                                                                    else this machine's server
    keys add NAME FILE [--admin]   keys:add NAME [--admin] < FILE   this machine's server (an
    keys list | keys remove NAME   keys:list | keys:remove NAME     older spelling is always
    access grant KEY APP           access:grant KEY APP             local)
    apps list|show APP|set APP K=V apps:list | apps:info | apps:set
    deploys list APP [--limit N]   deploys APP [-n N]
    logs DEPLOYMENT                deploys:log DEPLOYMENT
    serve, secrets rotate, --help  (not verbs: the CLI's own argparse, in cli.py)

On this machine a verb runs in the server started from the same data dir (through its 0600
socket), or, when that server is not running, in-process if it needs only the database
(admin.records: keys, access, apps list/info/set, deploys, a deployment's log); every other
verb then says the server must run. The client options may come anywhere before `--` or
`run`'s command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from rivetr_git.admin.verbs import BY_NAME, Verb, verb_parser
from rivetr_git.errors import UsageHelp, ValidationError

CLIENT_OPTIONS = ("--remote", "--app")
LOCAL_OPTIONS = ("--data-dir", "--config")  # these say "this machine's data dir": local mode


@dataclass(frozen=True)
class Alias:
    """An older, space-separated spelling of a verb, kept because the README documents it."""

    words: tuple[str, str]  # ("keys", "add")
    verb: str  # the verb it runs, "keys:add"
    usage: str  # its arguments, as the README shows them
    # args -> (the verb's args, the file the verb's stdin comes from)
    rewrite: Callable[[list[str]], tuple[list[str], str | None]] = lambda a: (a, None)

    @property
    def spelling(self) -> str:
        return " ".join(self.words).removesuffix(" -")

    def help(self) -> str:
        return (
            f"usage: rivetr-git {self.spelling} {self.usage}\n\nThe older spelling of "
            f"`rivetr-git {self.verb}`: the same action, the same output.\n\n"
            + verb_parser(BY_NAME[self.verb], "rivetr-git").format_help().rstrip()
        )


@dataclass(frozen=True)
class VerbCall:
    """A command line that names an admin verb (or an older spelling of one)."""

    verb: Verb
    args: tuple[str, ...]  # what follows the verb, --remote/--app taken out
    remote: str | None  # --remote NAME
    app: str | None  # --app NAME
    local: bool  # --data-dir or --config was given
    data_dir: str | None = None
    config: str | None = None
    alias: Alias | None = None  # the older spelling it was given in, if any
    stdin_file: str | None = None  # `keys add NAME FILE`: the key comes from FILE ('-': stdin)


def _keys_add(args: list[str]) -> tuple[list[str], str | None]:
    words = [a for a in args if a == "-" or not a.startswith("-")]
    if len(words) != 2:
        raise ValidationError(
            f"usage: rivetr-git keys add {ALIASES[0].usage}\n"
            "`rivetr-git keys add --help` explains it"
        )
    name, path = words
    return [name, *(a for a in args if a not in words)], path


def _deploys_list(args: list[str]) -> tuple[list[str], str | None]:
    # The older spelling's --limit is the verb's -n/--lines.
    return [
        ("--lines" + a.removeprefix("--limit")) if a.startswith("--limit") else a for a in args
    ], None


ALIASES: tuple[Alias, ...] = (
    Alias(("keys", "add"), "keys:add", "NAME PUBKEY_FILE [--admin]   ('-' reads stdin)", _keys_add),
    Alias(("keys", "list"), "keys:list", ""),
    Alias(("keys", "remove"), "keys:remove", "NAME"),
    Alias(("access", "grant"), "access:grant", "KEY APP"),
    Alias(("apps", "list"), "apps:list", ""),
    Alias(("apps", "show"), "apps:info", "APP"),
    Alias(("apps", "set"), "apps:set", "APP KEY=VALUE ..."),
    Alias(("deploys", "list"), "deploys", "APP [-n N | --limit N]", _deploys_list),
    Alias(("logs", "-"), "deploys:log", "DEPLOYMENT_ID"),  # `logs 12`: digits, never an app
)
_BY_WORDS = {a.words: a for a in ALIASES}
_GROUPS = {a.words[0] for a in ALIASES} - {"logs"}


def alias_help() -> str:
    return "\n".join(
        f"  rivetr-git {a.spelling} {a.usage}".rstrip() + f"\n      = {a.verb}" for a in ALIASES
    )


def parse_command_line(argv: Sequence[str]) -> VerbCall | None:
    """The verb an argv names, in either spelling; None when it names none (serve, secrets,
    --help, --version: the CLI's own parser answers those)."""
    found: dict[str, str] = {}
    words: list[str] = []  # the verb or the alias's words, then its arguments
    verb: Verb | None = None
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--" or (verb is not None and _verbatim_from_here(verb, word)):
            if verb is None:
                return None
            words.extend(argv[i:])
            break
        name, eq, value = word.partition("=")
        if name in CLIENT_OPTIONS + LOCAL_OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    raise ValidationError(f"{name} needs a value")
                value, i = argv[i + 1], i + 1
            found[name] = value
        elif words:
            words.append(word)
        elif word.startswith("-"):
            return None  # --help, --version, ...: the CLI's own parser answers
        elif word in BY_NAME or word in _GROUPS:
            verb = BY_NAME.get(word)
            words.append(word)
        else:
            return None
        i += 1
    if not words:
        return None
    alias = _alias_of(words)
    args, stdin_file = words[1:], None
    if alias is not None:
        args = words[len(alias.words) :] if alias.words[1] != "-" else words[1:]
        if "-h" in args or "--help" in args:
            raise UsageHelp(alias.help())
        args, stdin_file = alias.rewrite(args)
    return VerbCall(
        verb=BY_NAME[alias.verb if alias else words[0]],
        args=tuple(args),
        remote=found.get("--remote"),
        app=found.get("--app"),
        local=bool(found.keys() & set(LOCAL_OPTIONS)),
        data_dir=found.get("--data-dir"),
        config=found.get("--config"),
        alias=alias,
        stdin_file=stdin_file,
    )


def _alias_of(words: list[str]) -> Alias | None:
    head, rest = words[0], words[1:]
    if head == "logs" and rest[:1] and rest[0].isdigit():
        return _BY_WORDS[("logs", "-")]
    alias = _BY_WORDS.get((head, rest[0] if rest else ""))
    if alias is None and head in _GROUPS and head not in BY_NAME:
        _group_help(head, rest)
    return alias  # `deploys list APP` is the older spelling; `deploys APP` is the verb


def _group_help(group: str, rest: list[str]) -> NoReturn:
    choices = "\n".join(
        f"  rivetr-git {a.spelling} {a.usage}".rstrip() for a in ALIASES if a.words[0] == group
    )
    if rest[:1] in (["-h"], ["--help"]):
        raise UsageHelp(f"usage:\n{choices}")
    what = f"unknown action {rest[0]!r}" if rest else "an action is missing"
    raise ValidationError(f"{what}; rivetr-git {group} takes:\n{choices}")


def _verbatim_from_here(verb: Verb, word: str) -> bool:
    # `run APP CMD ...`: the command's own options (even --app) belong to the command.
    return verb.name == "run" and not word.startswith("-")


def parse_verb_call(argv: Sequence[str]) -> VerbCall | None:
    """Split `[options] VERB [args]` (client options may also follow the verb); None when
    the first non-option word is not a verb (an older spelling is not one either)."""
    call = parse_command_line(argv)
    return call if call is not None and call.alias is None else None
