"""One rule per kind of value: server settings, app settings and rivetr.toml give the same
verdict for the same value (the checks live once, in rivetr_git.validate)."""

from __future__ import annotations

import pytest

from rivetr_git import validate
from rivetr_git.admin.app_settings import APPS_SET, BUILDS, CHECKS, Fields, parse_assignments
from rivetr_git.errors import CheckoutFailed, ConfigError, ValidationError
from rivetr_git.pipeline import repo_config
from rivetr_git.settings import load_settings


def _server(name: str, value: str) -> bool:
    try:
        load_settings(env={f"RIVETR_{name.upper()}": value})
    except ConfigError:
        return False
    return True


def _app(key: str, value: str, fields: Fields = APPS_SET) -> bool:
    try:
        parse_assignments([f"{key}={value}"], fields)
    except ValidationError:
        return False
    return True


def _toml(key: str, literal: str) -> bool:
    try:
        repo_config.parse(f"[healthcheck]\n{key} = {literal}\n".encode())
    except CheckoutFailed:
        return False
    return True


@pytest.mark.parametrize(
    ("value", "ok"),
    [("10000", True), ("10001", False), ("0", False), ("1", True), ("2.5", False), ("x", False)],
)
def test_health_retries_have_one_bound(value: str, ok: bool) -> None:
    assert _server("health_retries", value) is ok
    assert _app("retries", value, CHECKS) is ok
    assert _toml("retries", value if value != "x" else '"x"') is ok


@pytest.mark.parametrize(
    ("value", "ok"), [("/health", True), ("/he alth", False), ("health", False), ("/a\tb", False)]
)
def test_health_paths_have_one_rule(value: str, ok: bool) -> None:
    assert _server("health_path", value) is ok
    assert _app("health_path", value) is ok
    assert _app("path", value, CHECKS) is ok
    assert _toml("path", f'"{value}"'.replace("\t", "\\t")) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("5", True),
        ("0.25", True),
        ("0", False),
        ("-1", False),
        ("nan", False),
        ("inf", False),
        ("1e9", False),
    ],
)
def test_seconds_have_one_rule(value: str, ok: bool) -> None:
    assert _server("health_timeout", value) is ok
    assert _app("timeout", value, CHECKS) is ok
    if value not in ("nan", "inf"):  # not TOML numbers
        assert _toml("timeout", value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [("8000", True), ("65535", True), ("65536", False), ("http", False), ("-1", False)],
)
def test_ports_have_one_rule(value: str, ok: bool) -> None:
    assert _server("proxy_port", value) is ok
    assert _app("port", value) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [("https://h.example/x", True), ("ftp://h", False), ("https://a b", False)]
)
def test_urls_have_one_rule(value: str, ok: bool) -> None:
    assert _server("webhook_url", value) is ok
    assert _app("webhook_url", value) is ok


def test_booleans_take_the_usual_spellings() -> None:
    check = validate.boolean
    for yes in ("true", "YES", "on", "1", True):
        assert check(yes) is True
    for no in ("false", "No", "off", "0", False):
        assert check(no) is False
    for bad in ("", "maybe", 1, None):
        with pytest.raises(ValueError, match="true or false"):
            check(bad)
    assert _server("auto_rollback", "off") is True
    assert _server("auto_rollback", "nah") is False
    assert _app("build_no_cache", "yes") and not _app("build_no_cache", "nah")


def test_sizes_and_env_names() -> None:
    assert validate.size("0.5g") == 512 * 1024**2
    assert validate.size("64k") == 65536
    with pytest.raises(ValueError, match="not a size"):
        validate.size("12 parsecs")
    assert validate.env_name("DATABASE_URL") == "DATABASE_URL"
    for bad in ("1X", "A-B", "", "A B"):
        with pytest.raises(ValueError, match="env var name"):
            validate.env_name(bad)
    assert _app("env", "NPM_TOKEN,API_URL", BUILDS)
    assert not _app("env", "NPM-TOKEN", BUILDS)


def test_storage_root_must_be_absolute() -> None:
    assert _server("storage_root", "/srv/storage") and _server("storage_root", "")
    assert not _server("storage_root", "data/storage")
    with pytest.raises(ConfigError, match="expected an absolute path"):
        load_settings(env={"RIVETR_STORAGE_ROOT": "./up"})
