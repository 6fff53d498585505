"""Settings of backing services (services:create): the images each kind runs."""

from __future__ import annotations

from dataclasses import dataclass

from rivetr_git import validate
from rivetr_git.settings.declare import _seconds, setting


@dataclass(frozen=True)
class ServiceSettings:
    postgres_image: str = setting(
        "postgres:16",
        "image of `services:create postgres` (--version replaces its tag); must follow the "
        "official image's interface: POSTGRES_PASSWORD, POSTGRES_USER, POSTGRES_DB, PGDATA",
        validate.image,
    )
    redis_image: str = setting(
        "redis:7",
        "image of `services:create redis` (--version replaces its tag); must take "
        "redis-server arguments as the official image does (--requirepass)",
        validate.image,
    )
    mariadb_image: str = setting(
        "mariadb:11",
        "image of `services:create mariadb` (--version replaces its tag); must follow the "
        "official image's interface: MARIADB_ROOT_PASSWORD, MARIADB_DATABASE, MARIADB_USER",
        validate.image,
    )
    service_start_timeout: float = setting(
        120.0, "seconds a new or restarted service has to pass its health check", _seconds
    )
