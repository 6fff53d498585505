"""An app's git-host secrets, encrypted with the master key: the HTTPS token, the SSH deploy
key (private half) and the webhook secret.

Each is an AES-GCM blob bound to (app, name), stored by store/git_tables.py and covered by
`secrets rotate` (store/env_tables.py re-encrypts app_secrets with the rest).
"""

from __future__ import annotations

import secrets as random
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rivetr_git.models import App
from rivetr_git.secrets.crypto import Cipher
from rivetr_git.store.database import Store

TOKEN = "git-token"
DEPLOY_KEY = "git-deploy-key"
WEBHOOK = "git-webhook-secret"


@dataclass(frozen=True)
class DeployKey:
    private_pem: str  # OpenSSH format
    public: str  # one authorized_keys line


def new_deploy_key(comment: str) -> DeployKey:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return DeployKey(private, f"{public.decode()} {comment}")


class GitSecrets:
    """Reads and writes the app's git-host secrets; values never leave in clear but here."""

    def __init__(self, store: Store, cipher: Cipher) -> None:
        self._store = store
        self._cipher = cipher

    async def get(self, app: App, name: str) -> str | None:
        blob = await self._store.app_secret(app, name)
        return None if blob is None else self._cipher.decrypt(app.name, name, blob)

    async def set(self, app: App, name: str, value: str | None) -> None:
        """Store `value` (None or '': remove it)."""
        blob = self._cipher.encrypt(app.name, name, value) if value else None
        await self._store.set_app_secret(app, name, blob)

    async def new_deploy_key(self, app: App, comment: str) -> str:
        """Generate (replace) the app's ed25519 deploy key; returns the public line."""
        key = new_deploy_key(comment)
        await self.set(app, DEPLOY_KEY, key.private_pem)
        await self._store.set_git_public_key(app, key.public)
        return key.public

    async def webhook_secret(self, app: App, rotate: bool = False) -> str:
        """The app's webhook secret, made on first use (or `rotate`)."""
        current = None if rotate else await self.get(app, WEBHOOK)
        if current is None:
            current = random.token_hex(32)
            await self.set(app, WEBHOOK, current)
        return current
