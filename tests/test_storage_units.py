"""Pure logic of storage: mount specs and a compose file's volumes (no engine behind it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rivetr_git.errors import AccessDenied, ValidationError
from rivetr_git.pipeline.builders.compose_storage import apply
from rivetr_git.pipeline.mounts import parse
from rivetr_git.store.mounts import AppMount


def test_mount_specs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "up").mkdir(parents=True)
    assert parse("data:/app/data/", "", False) == AppMount("/app/data", "data", False)
    assert parse(f"{root}/up:/up", str(root), True) == AppMount("/up", str(root / "up"), True)
    with pytest.raises(AccessDenied):
        parse(f"{root}/up:/up", str(root), False)
    with pytest.raises(ValidationError, match="storage_root setting is empty"):
        parse(f"{root}/up:/up", "", True)
    with pytest.raises(ValidationError, match="outside storage_root"):
        parse(f"{root}/up/../..:/up", str(root), True)
    with pytest.raises(ValidationError, match="not a directory"):
        parse(f"{root}/missing:/up", str(root), True)


def test_compose_volumes_become_the_apps_and_services_get_log_caps() -> None:
    data: dict[str, Any] = {
        "services": {"web": {"volumes": ["counts:/data"]}, "worker": {}},
        "volumes": {"counts": None, "cache": {"driver": "local", "labels": {"a": "b"}}},
    }
    found = apply(data, "inst", "app", {"max-size": "1024", "max-file": "2"})
    assert found == {"rivetr-inst-app-counts": "counts", "rivetr-inst-app-cache": "cache"}
    assert data["volumes"] == {
        "counts": {"name": "rivetr-inst-app-counts", "external": True},
        "cache": {"name": "rivetr-inst-app-cache", "external": True},
    }
    logging = {"driver": "json-file", "options": {"max-size": "1024", "max-file": "2"}}
    assert [s["logging"] for s in data["services"].values()] == [logging, logging]
    # No caps set: compose's (the engine's) defaults.
    plain: dict[str, object] = {"services": {"web": {}}}
    assert apply(plain, "inst", "app", {}) == {}
    assert plain == {"services": {"web": {}}}
