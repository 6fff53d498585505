"""The arguments of each admin verb, for the verb table (admin/verbs.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def n(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n", "--lines", type=int, default=None, metavar="N", help="how many lines/entries to show"
    )


def assignments(what: str, example: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "assignments", nargs="+", metavar="KEY=VALUE", help=f"{what}, e.g. {example}"
        )

    return add


def config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reveal", action="store_true", help="show the values too, not just names")


def config_get(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="KEY")


def config_set(p: argparse.ArgumentParser) -> None:
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


def config_unset(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="KEY")
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="store only; the next deploy or restart picks the change up",
    )


def destroy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--confirm",
        metavar="APP",
        default=None,
        help="the app's name again: destroying removes its containers, images, "
        "repository, settings and env for good",
    )
    p.add_argument(
        "--purge-data", action="store_true", help="remove its volumes too (kept otherwise)"
    )


def storage_mount(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "mount",
        metavar="VOLUME:/PATH",
        help="a volume of the app (created on first use), e.g. data:/app/data; admins: "
        "/host/dir:/path under storage_root",
    )


def storage_unmount(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="/PATH", help="the path in the container (storage:list)")


def hosts(p: argparse.ArgumentParser) -> None:
    p.add_argument("hosts", nargs="+", metavar="HOSTNAME", help="e.g. www.example.com")


def logs(p: argparse.ArgumentParser) -> None:
    n(p)
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep streaming new output until you press Ctrl-C",
    )


def run(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="CMD ...",
        help="the command and its arguments (no shell unless you run sh -c '...')",
    )


def enter(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="[TYPE.N] [CMD ...]",
        help="the process (default web.1) and the command (default sh); ssh -t gives it a terminal",
    )


def release_number(value: str) -> int:
    digits = value.removeprefix("#")
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a release number such as 12; `releases APP` lists them"
        )
    return int(digits)


def rollback(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "release",
        nargs="?",
        default=None,
        metavar="RELEASE",
        type=release_number,
        help="release number from `releases APP` (default: the one before the live one)",
    )


def keys_add(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="a name for the key, e.g. alice")
    p.add_argument("--admin", action="store_true", help="give the key the admin role")


def key_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the key's name (see keys:list)")


def access(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", metavar="KEY", help="the key's name (see keys:list)")
    p.add_argument("app_name", metavar="APP")


def deployment_number(value: str) -> int:
    digits = value.removeprefix("#")
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a deployment number such as 12; `deploys APP` lists them"
        )
    return int(digits)


def deployment(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "deployment",
        type=deployment_number,
        metavar="DEPLOYMENT",
        help="a deployment's number from `deploys APP`",
    )


def apps_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "assignments",
        nargs="+",
        metavar="KEY=VALUE",
        help="dockerfile=PATH (in the repo), port=N (the app's port in the "
        "container), health_path=/PATH (must answer 2xx/3xx), deploy_branch=NAME, "
        "webhook_url=URL (gets this app's events), build_type=auto|dockerfile|"
        "compose|buildpack|railpack|pack|nixpacks|static, build_context=DIR, "
        "build_target=STAGE, build_no_cache=true|false, publish_dir=DIR (static "
        "sites), compose_service=NAME; an empty value (port=) resets to the default",
    )


def help(p: argparse.ArgumentParser) -> None:
    p.add_argument("topic", nargs="?", default=None, metavar="VERB")


def apps_create(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--git",
        metavar="URL",
        default=None,
        help="deploy from this git host: https://host/owner/repo.git, ssh://... or "
        "git@host:owner/repo.git (then git:set token=... or git:key)",
    )
    p.add_argument("--branch", metavar="BRANCH", default=None, help="the branch that deploys")


def deploy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "ref",
        nargs="?",
        default=None,
        metavar="REF",
        help="a branch, tag or full commit sha of the git host (default: the app's branch)",
    )


def rotate(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rotate", action="store_true", help="replace the secret (the old one stops working)"
    )


def tokens_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="a name for the token, e.g. ci")
    p.add_argument(
        "--app",
        dest="apps",
        action="append",
        default=None,
        metavar="APP",
        help="limit the token to this app (repeat for more); default: every app, as admin",
    )
    p.add_argument("--read-only", action="store_true", help="the token can only read")


def token_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the token's name (see tokens:list)")


def notify_add(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        nargs="+",
        metavar="[APP] URL",
        help="the app (none: every app, admin keys only) and an Apprise URL such as "
        "slack://..., discord://..., mailto://..., json://..., or https:// for rivetr's "
        "signed JSON webhook",
    )
    p.add_argument(
        "--events",
        default=None,
        metavar="EVENT,...",
        help="only these events, e.g. deploy.failed,deploy.rolled_back (default: all)",
    )


def notify_app(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "app_name", nargs="?", default=None, metavar="APP", help="none: the server-wide ones"
    )


def notify_remove(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target", nargs="+", metavar="[APP] ID", help="a channel number from notify:list"
    )
