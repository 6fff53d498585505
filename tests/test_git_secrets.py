"""Git-host secrets at rest: encrypted and bound to (app, name), never in the database in
clear, covered by `secrets rotate`; webhook deliveries remembered for a while only."""

from __future__ import annotations

from pathlib import Path

import pytest

from rivetr_git.errors import DecryptionFailed
from rivetr_git.secrets.crypto import open_master_key, read_key
from rivetr_git.secrets.git_secrets import DEPLOY_KEY, TOKEN, GitSecrets
from rivetr_git.secrets.master_key import rotate
from rivetr_git.store.database import Store
from tests.test_api_units import store

TOKEN_VALUE = "ghp_plain-marker-token"


__all__ = ["store"]  # the fixture, used by name


async def test_secrets_are_encrypted_bound_and_rotated(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "rivetr.db")
    secrets = GitSecrets(store, open_master_key(tmp_path, await store.any_env_value()))
    web, other = await store.create_app("ghsec"), await store.create_app("ghother")
    await store.set_git_url(web, "ssh://git@h/r.git")
    await secrets.set(web, TOKEN, TOKEN_VALUE)
    public = await secrets.new_deploy_key(web, "rivetr-ghsec")
    assert public.startswith("ssh-ed25519 ") and public.endswith(" rivetr-ghsec")
    assert (await store.git_source(web)).public_key == public  # type: ignore[union-attr]
    private = await secrets.get(web, DEPLOY_KEY)
    assert private is not None and "OPENSSH PRIVATE KEY" in private
    hook = await secrets.webhook_secret(web)
    assert await secrets.webhook_secret(web) == hook != await secrets.webhook_secret(web, True)
    files = b"".join(p.read_bytes() for p in tmp_path.glob("rivetr.db*"))
    assert TOKEN_VALUE.encode() not in files and b"OPENSSH PRIVATE" not in files
    # A blob copied to another app does not decrypt there.
    blob = await store.app_secret(web, TOKEN)
    await store.set_app_secret(other, TOKEN, blob)
    with pytest.raises(DecryptionFailed):
        await secrets.get(other, TOKEN)
    await store.set_app_secret(other, TOKEN, None)

    old = read_key(tmp_path / "master.key")
    await store.close()
    assert await rotate(tmp_path, tmp_path / "rivetr.db") == 3  # token, key, webhook secret
    reopened = await Store.open(tmp_path / "rivetr.db")
    try:
        web = await reopened.get_app("ghsec")
        assert (
            await GitSecrets(reopened, read_key(tmp_path / "master.key")).get(web, TOKEN)
            == TOKEN_VALUE
        )
        with pytest.raises(DecryptionFailed):
            await GitSecrets(reopened, old).get(web, TOKEN)
    finally:
        await reopened.close()


async def test_deliveries_are_seen_once(store: Store) -> None:
    app = await store.create_app("ghdel")
    assert await store.first_delivery(app, "github:1")
    assert not await store.first_delivery(app, "github:1")
    assert await store.first_delivery(app, "gitlab:1")
    # IDs older than DELIVERIES_KEPT are forgotten (no host retries a delivery that long).
    await store._db.execute("UPDATE webhook_deliveries SET received_at = '2000-01-01'")
    assert await store.first_delivery(app, "github:1")
