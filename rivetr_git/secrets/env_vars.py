"""Apps' env vars: parsed and checked here, stored encrypted, decrypted only to run a release.

Values never appear in an error message, a log line or a command line; names may.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from rivetr_git.errors import NotFound, ValidationError
from rivetr_git.secrets.crypto import Cipher
from rivetr_git.store.database import Store

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED = frozenset({"PORT"})  # the platform sets it to the app's port
MAX_VALUE_BYTES = 64 * 1024  # Linux takes at most 128 KiB per env string
_EXAMPLE = "e.g. DATABASE_URL=postgres://db/app SECRET_KEY=s3cret"


def _check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValidationError(
            f"{name!r} is not a valid env var name: use letters, digits and _, not starting "
            "with a digit (e.g. DATABASE_URL)"
        )
    if name in RESERVED:
        raise ValidationError(
            f"{name} is set by the platform (the port your app must listen "
            "on); it cannot be configured"
        )
    return name


def parse_assignments(args: list[str]) -> dict[str, str]:
    """NAME=VALUE arguments; a value may hold '=', newlines, quotes and any UTF-8.

    Raises ValidationError naming the argument's position or name, never its value.
    """
    if not args:
        raise ValidationError(f"give at least one NAME=VALUE ({_EXAMPLE})")
    values: dict[str, str] = {}
    for position, arg in enumerate(args, start=1):
        name, eq, value = arg.partition("=")
        if not eq:
            # The argument may be a value typed without its name: do not echo it.
            raise ValidationError(f"argument {position} is not NAME=VALUE ({_EXAMPLE})")
        if not name:
            raise ValidationError(f"argument {position} has no name before '=' ({_EXAMPLE})")
        if name in values:
            raise ValidationError(f"{name} is given twice; give each name once")
        values[_check_name(name)] = _check_value(name, value)
    return values


def _check_value(name: str, value: str) -> str:
    if "\0" in value:
        raise ValidationError(
            f"the value of {name} holds a NUL character, which no process environment can carry"
        )
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise ValidationError(
            f"the value of {name} is longer than {MAX_VALUE_BYTES} bytes; "
            "store large data in a file or a volume instead"
        )
    return value


def validate_names(names: list[str]) -> list[str]:
    """Names for unset/get, checked, duplicates dropped (order kept)."""
    if not names:
        raise ValidationError("give at least one env var name (e.g. DATABASE_URL)")
    return list(dict.fromkeys(_check_name(n) for n in names))


class EnvVars:
    """The env var API the admin verbs, the CLI and the pipeline use. `app` is a name."""

    def __init__(self, store: Store, cipher: Cipher) -> None:
        self._store = store
        self._cipher = cipher

    async def set(self, app: str, values: Mapping[str, str]) -> None:
        """Add or replace these vars (all or none). Names and values must come from
        parse_assignments (or pass its checks)."""
        found = await self._store.get_app(app)
        if not values:
            raise ValidationError(f"give at least one NAME=VALUE ({_EXAMPLE})")
        await self._store.set_env_values(
            found,
            {
                _check_name(name): self._cipher.encrypt(app, name, _check_value(name, value))
                for name, value in values.items()
            },
        )

    async def unset(self, app: str, names: list[str]) -> None:
        """Remove these vars (all or none); NotFound if the app lacks any of them."""
        found = await self._store.get_app(app)
        await self._store.unset_env_values(found, validate_names(names))

    async def names(self, app: str) -> list[str]:
        found = await self._store.get_app(app)
        return [name for name, _ in await self._store.env_values(found)]

    async def get(self, app: str, name: str) -> str:
        found = await self._store.get_app(app)
        _check_name(name)
        for stored, blob in await self._store.env_values(found):
            if stored == name:
                return self._cipher.decrypt(app, name, blob)
        raise NotFound(f"{app} has no env var {name}; `config {app}` lists its names")

    async def reveal(self, app: str) -> dict[str, str]:
        """Every var of the app, decrypted (for `config APP --reveal` and `run`)."""
        found = await self._store.get_app(app)
        return {
            name: self._cipher.decrypt(app, name, blob)
            for name, blob in await self._store.env_values(found)
        }

    async def snapshot(self, app: str, deployment_id: int) -> None:
        """Give a deployment the app's current env (a new deployment gets it when created)."""
        await self._store.snapshot_env(await self._store.get_app(app), deployment_id)

    async def for_deployment(self, deployment_id: int) -> dict[str, str]:
        """The env a deployment runs with, decrypted. Raises DecryptionFailed."""
        app, blobs = await self._store.deployment_env_values(deployment_id)
        return {name: self._cipher.decrypt(app, name, blob) for name, blob in blobs}

    async def rotate(self, new: Cipher) -> int:
        """Re-encrypt every stored value under `new`, in one transaction; afterwards this
        object uses `new`. Raises DecryptionFailed (changing nothing) if a value does not
        decrypt under the current key. Returns how many values were re-encrypted."""
        old = self._cipher

        def reencrypt(app: str, name: str, blob: bytes) -> bytes:
            return new.encrypt(app, name, old.decrypt(app, name, blob))

        count = await self._store.reencrypt_env(reencrypt)
        self._cipher = new
        return count
