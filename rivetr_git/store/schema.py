"""The database schema, as migrations: entry i moves it from version i to i+1."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar


def now() -> str:
    """A timestamp as the tables store them: ISO 8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# The statuses as the first migration knew them (its text must never change).
_STATUSES = (
    "'pending', 'cloning', 'building', 'starting', 'health_check', 'running', 'failed', 'replaced'"
)

# Each entry moves the schema from version i to i+1; never edit a released entry.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE apps (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        deploy_branch TEXT,
        dockerfile TEXT NOT NULL DEFAULT 'Dockerfile',
        port INTEGER,
        health_path TEXT
    );
    CREATE TABLE ssh_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'developer')),
        created_at TEXT NOT NULL
    );
    CREATE TABLE app_access (
        key_id INTEGER NOT NULL REFERENCES ssh_keys(id) ON DELETE CASCADE,
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        PRIMARY KEY (key_id, app_id)
    );
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY,
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        status TEXT NOT NULL CHECK (status IN ({_STATUSES})),
        commit_sha TEXT NOT NULL,
        commit_message TEXT NOT NULL DEFAULT '',
        image TEXT,
        container_id TEXT,
        host_port INTEGER,
        error_message TEXT,
        pushed_by TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE INDEX deployments_app ON deployments (app_id, id);
    CREATE INDEX deployments_status ON deployments (status);
    CREATE TABLE deployment_logs (
        id INTEGER PRIMARY KEY,
        deployment_id INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        stage TEXT NOT NULL,
        stream TEXT NOT NULL,
        line TEXT NOT NULL
    );
    CREATE INDEX deployment_logs_deployment ON deployment_logs (deployment_id, id);
    """,
    """
    ALTER TABLE apps ADD COLUMN webhook_url TEXT;
    ALTER TABLE apps ADD COLUMN crashed_reason TEXT;
    ALTER TABLE deployments ADD COLUMN rollback_of INTEGER REFERENCES deployments(id);
    """,
    """
    ALTER TABLE deployments ADD COLUMN app_port INTEGER;
    """,
    """
    ALTER TABLE apps ADD COLUMN memory_limit INTEGER;
    ALTER TABLE apps ADD COLUMN cpu_limit REAL;
    ALTER TABLE apps ADD COLUMN health_timeout REAL;
    ALTER TABLE apps ADD COLUMN health_interval REAL;
    ALTER TABLE apps ADD COLUMN health_retries INTEGER;
    ALTER TABLE apps ADD COLUMN health_start_period REAL;
    ALTER TABLE apps ADD COLUMN pre_deploy TEXT;
    ALTER TABLE apps ADD COLUMN post_deploy TEXT;
    ALTER TABLE apps ADD COLUMN deploy_command_timeout REAL;
    ALTER TABLE apps ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deployments ADD COLUMN kind TEXT NOT NULL DEFAULT 'push';
    ALTER TABLE deployments ADD COLUMN post_deploy_error TEXT;
    CREATE TABLE app_domains (
        host TEXT PRIMARY KEY,
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE
    );
    CREATE INDEX app_domains_app ON app_domains (app_id);
    """,
    # Env var values are AES-GCM blobs (crypto.py), never plaintext. A deployment keeps a
    # copy of the env it was deployed with, so a rollback runs with that release's env.
    # Both go with their app (ON DELETE CASCADE through deployments).
    """
    CREATE TABLE env_vars (
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (app_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE deployment_env (
        deployment_id INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (deployment_id, name)
    ) WITHOUT ROWID;
    """,
    # Build types and their options.
    """
    ALTER TABLE apps ADD COLUMN build_type TEXT;
    ALTER TABLE apps ADD COLUMN build_context TEXT;
    ALTER TABLE apps ADD COLUMN build_target TEXT;
    ALTER TABLE apps ADD COLUMN build_no_cache INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE apps ADD COLUMN publish_dir TEXT;
    ALTER TABLE apps ADD COLUMN compose_service TEXT;
    """,
    # How a deployment's image was built (restarts and rollbacks need it).
    """
    ALTER TABLE deployments ADD COLUMN build_type TEXT;
    """,
    # Names of the app's env vars its builds get (build args / builder env).
    """
    ALTER TABLE apps ADD COLUMN build_env TEXT;
    """,
    # Bind mounts an admin allows a compose file of the app (compose:allow).
    """
    ALTER TABLE apps ADD COLUMN compose_binds TEXT;
    """,
    # HTTPS (store/tls.py): an app's certificate and its policy; keys are AES-GCM blobs
    # (secrets/crypto.py) bound to the app, the ACME account key to its directory URL.
    """
    CREATE TABLE app_tls (
        app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
        auto INTEGER NOT NULL DEFAULT 0,
        redirect INTEGER,
        hsts INTEGER NOT NULL DEFAULT 0,
        source TEXT CHECK (source IN ('uploaded', 'acme')),
        chain_pem TEXT,
        key BLOB,
        not_after TEXT,
        issued_at TEXT,
        last_error TEXT,
        last_error_at TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL
    );
    CREATE TABLE acme_account (
        directory TEXT PRIMARY KEY,
        key BLOB NOT NULL,
        uri TEXT NOT NULL DEFAULT ''
    );
    """,
    # An app's storage (storage:mount): a named volume of the app (`source` its short name)
    # or, mounted by an admin, a host directory (`source` absolute, `bind` 1). The volumes
    # themselves outlive the rows: apps:destroy keeps them unless --purge-data.
    """
    CREATE TABLE app_mounts (
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        source TEXT NOT NULL,
        bind INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app_id, target)
    ) WITHOUT ROWID;
    """,
    # How many containers of each process type run (ps:scale).
    """
    ALTER TABLE apps ADD COLUMN scale TEXT;
    """,
    # Backing services (services:create): the password is an AES-GCM blob bound to
    # 'service:NAME'; host_port is set while exposed on 127.0.0.1. A link gives an app the
    # service's URL in `env_name` (its env var of that name, kept encrypted in env_vars).
    """
    CREATE TABLE services (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('postgres', 'redis', 'mariadb')),
        image TEXT NOT NULL,
        password BLOB NOT NULL,
        container_id TEXT,
        host_port INTEGER,
        backup_schedule TEXT,
        backup_keep INTEGER NOT NULL DEFAULT 7,
        created_at TEXT NOT NULL
    );
    CREATE TABLE service_links (
        service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        env_name TEXT NOT NULL,
        PRIMARY KEY (service_id, app_id)
    ) WITHOUT ROWID;
    """,
    # The seed's runbook queries (README "Debugging") name a log line's time and text
    # `timestamp` and `message`: computed from `at` and `line`, so one value is stored.
    # (deployments.app_id, error_message and created_at are there since the first entry.)
    """
    ALTER TABLE deployment_logs ADD COLUMN timestamp TEXT
        GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%S', at, 'unixepoch')
            || printf('.%06dZ', CAST((at - CAST(at AS INTEGER)) * 1000000 AS INTEGER))) VIRTUAL;
    ALTER TABLE deployment_logs ADD COLUMN message TEXT GENERATED ALWAYS AS (line) VIRTUAL;
    """,
    # Deploy commands become lists (JSON arrays; a single command set before is its one
    # entry); auto-rollback and the live health check's interval per app (NULL: the server's).
    """
    UPDATE apps SET pre_deploy = json_array(pre_deploy) WHERE pre_deploy IS NOT NULL;
    UPDATE apps SET post_deploy = json_array(post_deploy) WHERE post_deploy IS NOT NULL;
    ALTER TABLE apps ADD COLUMN auto_rollback INTEGER;
    ALTER TABLE apps ADD COLUMN live_check_interval REAL;
    """,
    # Apps from a git host (store/git_tables.py): where the code is fetched from, its secrets
    # (token, deploy key, webhook secret) as AES-GCM blobs bound to (app, name), the webhook
    # deliveries already seen, and the HTTP API's bearer tokens (a SHA-256 hash only).
    """
    CREATE TABLE app_git (
        app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        public_key TEXT
    );
    CREATE TABLE app_secrets (
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (app_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE webhook_deliveries (
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        delivery TEXT NOT NULL,
        received_at TEXT NOT NULL,
        PRIMARY KEY (app_id, delivery)
    ) WITHOUT ROWID;
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        apps TEXT,
        read_only INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        last_used TEXT
    );
    """,
    # The status `cancelled` (deploys:cancel) and who cancelled: a CHECK changes only by
    # rebuilding the table (foreign keys are off while migrating: store/database.py).
    f"""
    CREATE TABLE deployments_new (
        id INTEGER PRIMARY KEY,
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        status TEXT NOT NULL CHECK (status IN ({_STATUSES}, 'cancelled')),
        commit_sha TEXT NOT NULL,
        commit_message TEXT NOT NULL DEFAULT '',
        image TEXT,
        container_id TEXT,
        host_port INTEGER,
        error_message TEXT,
        pushed_by TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        rollback_of INTEGER REFERENCES deployments(id),
        app_port INTEGER,
        kind TEXT NOT NULL DEFAULT 'push',
        post_deploy_error TEXT,
        build_type TEXT,
        cancelled_by TEXT
    );
    INSERT INTO deployments_new (id, app_id, status, commit_sha, commit_message, image,
        container_id, host_port, error_message, pushed_by, created_at, finished_at,
        rollback_of, app_port, kind, post_deploy_error, build_type)
    SELECT id, app_id, status, commit_sha, commit_message, image, container_id, host_port,
        error_message, pushed_by, created_at, finished_at, rollback_of, app_port, kind,
        post_deploy_error, build_type FROM deployments;
    DROP TABLE deployments;
    ALTER TABLE deployments_new RENAME TO deployments;
    CREATE INDEX deployments_app ON deployments (app_id, id);
    CREATE INDEX deployments_status ON deployments (status);
    """,
    # Notification channels (notify:add): an app's (or, app_id NULL, the server's); the URL
    # holds credentials, so it is an AES-GCM blob (secrets/channels.py).
    """
    CREATE TABLE notify_channels (
        id INTEGER PRIMARY KEY,
        app_id INTEGER REFERENCES apps(id) ON DELETE CASCADE,
        url BLOB NOT NULL,
        events TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX notify_channels_app ON notify_channels (app_id);
    """,
)


T = TypeVar("T")


def columns(cls: type[Any], **sql: str) -> str:
    """The SELECT list for a model dataclass: one column per field, named as the field (a
    field may name its own SQL expression, e.g. app_name="a.name"), so rows map by name."""
    return ", ".join(sql.get(f.name, f.name) for f in dataclasses.fields(cls))


def from_row(cls: type[T], row: Sequence[Any], **convert: Callable[[Any], Any]) -> T:
    """A model dataclass from a row selected with `columns(cls)`; `convert` maps a field's
    stored value (0/1, a status string) to its type."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values = dict(zip(names, row, strict=True))
    for name, fn in convert.items():
        values[name] = fn(values[name])
    return cls(**values)
