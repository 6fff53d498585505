"""What differs between the kinds of service: the official image's interface (env, data
path, command), the health check, the URL apps get, and how a dump is made and restored.

Commands that need the password read it from the container's own environment inside
`sh -c` (e.g. "$REDIS_PASSWORD"), so it is never in an argv, a log line or an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rivetr_git.errors import ValidationError

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
USER = "rivetr"  # the database user apps connect as (postgres, mariadb)

_REDIS_AUTH = 'export REDISCLI_AUTH="$REDIS_PASSWORD"; '
_MARIADB_ROOT = 'export MYSQL_PWD="$MARIADB_ROOT_PASSWORD"; '
# BGSAVE, wait until it is done (and succeeded), then the file it wrote.
_REDIS_DUMP = (
    "set -e; "
    + _REDIS_AUTH
    + "busy() { redis-cli info persistence | grep -q 'rdb_bgsave_in_progress:1'; }; "
    "while busy; do sleep 0.05; done; redis-cli bgsave >/dev/null; "
    "while busy; do sleep 0.05; done; "
    "redis-cli info persistence | grep -q 'rdb_last_bgsave_status:ok'; "
    'exec cat "$(redis-cli config get dir | tail -n 1)/$(redis-cli config get dbfilename | '
    'tail -n 1)"'
)
REDIS_RESTORE_FILE = "/data/.rivetr-restore.rdb"
# Swap the uploaded file in and stop without saving over it; the container is then
# started again and loads it.
REDIS_SWAP = (
    _REDIS_AUTH + "redis-cli config set save '' >/dev/null; "
    "redis-cli config set appendonly no >/dev/null; "
    f'mv {REDIS_RESTORE_FILE} "$(redis-cli config get dir | tail -n 1)/'
    '$(redis-cli config get dbfilename | tail -n 1)" && redis-cli shutdown nosave; true'
)


@dataclass(frozen=True)
class Kind:
    name: str
    port: int
    data_path: str  # where the image keeps its data (the service's volume)
    env_var: str  # what the first link sets: DATABASE_URL or REDIS_URL
    scheme: str
    suffix: str  # of backup files
    magics: tuple[bytes, ...]  # a dump starts with one of these
    env: Callable[[str, str], dict[str, str]]  # (service name, password) -> container env
    health: Callable[[str], list[str]]  # (service name) -> a command that exits 0 when ready
    dump: Callable[[str], list[str]]  # writes a dump to stdout
    restore: Callable[[str], list[str]]  # reads a dump from stdin
    connect: Callable[[str], list[str]]  # the interactive client
    command: list[str] | None = None

    def url(self, name: str, password: str, host: str, port: int) -> str:
        if self.name == "redis":
            return f"redis://default:{password}@{host}:{port}/0"
        return f"{self.scheme}://{USER}:{password}@{host}:{port}/{name}"


def _sh(script: str) -> list[str]:
    return ["sh", "-c", script]


KINDS: dict[str, Kind] = {
    "postgres": Kind(
        name="postgres",
        port=5432,
        data_path="/var/lib/postgresql/data",
        env_var="DATABASE_URL",
        scheme="postgres",
        suffix=".dump",
        magics=(b"PGDMP",),
        env=lambda name, pw: {
            "POSTGRES_PASSWORD": pw,
            "POSTGRES_USER": USER,
            "POSTGRES_DB": name,
            "PGDATA": "/var/lib/postgresql/data/pgdata",
        },
        # Over TCP: during the first start's initdb the server listens on its socket only.
        health=lambda name: ["pg_isready", "-q", "-h", "127.0.0.1", "-U", USER, "-d", name],
        dump=lambda name: ["pg_dump", "-Fc", "-U", USER, "-d", name],
        # One transaction: a dump that fails half-way leaves the database as it was.
        restore=lambda name: [
            "pg_restore",
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            "-U",
            USER,
            "-d",
            name,
        ],
        connect=lambda name: ["psql", "-U", USER, name],
    ),
    "redis": Kind(
        name="redis",
        port=6379,
        data_path="/data",
        env_var="REDIS_URL",
        scheme="redis",
        suffix=".rdb",
        magics=(b"REDIS",),
        env=lambda name, pw: {"REDIS_PASSWORD": pw},
        health=lambda name: _sh(_REDIS_AUTH + "redis-cli ping | grep -q PONG"),
        dump=lambda name: _sh(_REDIS_DUMP),
        restore=lambda name: _sh(f"cat > {REDIS_RESTORE_FILE}"),
        connect=lambda name: _sh(_REDIS_AUTH + "exec redis-cli"),
        # The official interface (redis-server --requirepass), the value from the env.
        command=_sh('exec docker-entrypoint.sh redis-server --requirepass "$REDIS_PASSWORD"'),
    ),
    "mariadb": Kind(
        name="mariadb",
        port=3306,
        data_path="/var/lib/mysql",
        env_var="DATABASE_URL",
        scheme="mysql",
        suffix=".sql",
        magics=(b"-- MariaDB dump", b"-- MySQL dump", b"/*M!999999"),
        env=lambda name, pw: {
            "MARIADB_ROOT_PASSWORD": pw,
            "MARIADB_DATABASE": name,
            "MARIADB_USER": USER,
            "MARIADB_PASSWORD": pw,
        },
        health=lambda name: _sh(_MARIADB_ROOT + "mariadb-admin -uroot -h 127.0.0.1 ping"),
        dump=lambda name: _sh(
            _MARIADB_ROOT + "exec mariadb-dump -uroot --single-transaction --routines "
            '--triggers "$MARIADB_DATABASE"'
        ),
        restore=lambda name: _sh(_MARIADB_ROOT + 'exec mariadb -uroot "$MARIADB_DATABASE"'),
        connect=lambda name: _sh(_MARIADB_ROOT + 'exec mariadb -uroot "$MARIADB_DATABASE"'),
    ),
}


def kind_of(name: str) -> Kind:
    """Raises ValidationError naming the kinds there are."""
    kind = KINDS.get(name)
    if kind is None:
        raise ValidationError(
            f"unknown service kind {name!r}; choose one of {', '.join(sorted(KINDS))}"
        )
    return kind


def with_version(image: str, version: str | None) -> str:
    """`image` with its tag replaced by `version` (None: as it is)."""
    if version is None:
        return image
    if not _TAG.fullmatch(version):
        raise ValidationError(
            f"{version!r} is not a version (an image tag such as 16 or 16.4-bookworm)"
        )
    repository, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:  # no tag (the colon was a registry's port)
        repository = image
    return f"{repository.split('@')[0]}:{version}"


def version_of(image: str) -> str:
    _, colon, tag = image.rpartition(":")
    return tag if colon and "/" not in tag else "latest"


def env_name_for(kind: Kind, service: str, taken: set[str]) -> str:
    """DATABASE_URL / REDIS_URL, or NAME_URL when the app has that one already."""
    if kind.env_var not in taken:
        return kind.env_var
    return service.upper().replace("-", "_") + "_URL"
