"""The arguments of the services:* verbs, for the verb table (admin/verbs.py)."""

from __future__ import annotations

import argparse


def name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the service's name (services:list)")


def create(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", metavar="KIND", help="postgres, redis or mariadb")
    p.add_argument("name", metavar="NAME", help="a DNS label: linked apps reach it as NAME")
    p.add_argument(
        "--version",
        default=None,
        metavar="V",
        help="the image tag (default: the tag of the postgres_image/redis_image/"
        "mariadb_image setting)",
    )


def link(p: argparse.ArgumentParser) -> None:
    name(p)
    p.add_argument("app_name", metavar="APP")


def logs(p: argparse.ArgumentParser) -> None:
    name(p)
    p.add_argument("-n", "--lines", type=int, default=100, metavar="N", help="how many lines")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming until Ctrl-C")


def destroy(p: argparse.ArgumentParser) -> None:
    name(p)
    p.add_argument("--confirm", metavar="NAME", default=None, help="the service's name again")
    p.add_argument("--force", action="store_true", help="unlink its apps first (they lose its URL)")
    p.add_argument(
        "--purge-data", action="store_true", help="remove its volume too (kept otherwise)"
    )


def expose(p: argparse.ArgumentParser) -> None:
    name(p)
    p.add_argument(
        "host_port",
        nargs="?",
        type=int,
        default=None,
        metavar="HOST_PORT",
        help="the 127.0.0.1 port (default: a free one)",
    )


def backup(p: argparse.ArgumentParser) -> None:
    name(p)
    p.add_argument(
        "--schedule",
        default=None,
        metavar="CRON",
        help="back up on this schedule (five cron fields, UTC, e.g. '0 3 * * *'; '' stops "
        "it) instead of now",
    )
    p.add_argument(
        "--keep", type=int, default=None, metavar="N", help="scheduled backups kept (default 7)"
    )


def restore(p: argparse.ArgumentParser) -> None:
    name(p)
    p.add_argument("backup", metavar="BACKUP", help="a file from services:backups, or latest")
    p.add_argument("--force", action="store_true", help="even while apps are linked to it")


def import_(p: argparse.ArgumentParser) -> None:
    name(p)
    p.add_argument("--force", action="store_true", help="even while apps are linked to it")
