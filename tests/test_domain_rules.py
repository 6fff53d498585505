"""Custom domains are hostnames: IP literals and localhost names are refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rivetr_git.errors import ValidationError
from rivetr_git.names import validate_domain
from tests.helpers import AppRepo, Key, Server
from tests.test_admin_verbs import fails, get_host, ok

ADDRESSES = (
    "127.0.0.1",
    "10.0.0.1.",
    "::1",
    "[::1]",
    "[fe80::1%eth0]",
    "::ffff:127.0.0.1",
    "2130706433",
    "127.1",
    "0x7f.0.0.1",
    "www.0x7f",
)


@pytest.mark.parametrize("raw", ADDRESSES)
def test_ip_literals_are_refused_as_addresses(raw: str) -> None:
    with pytest.raises(ValidationError, match="is an IP address, not a domain name"):
        validate_domain(raw, "apps.example.com")


@pytest.mark.parametrize("raw", ("localhost", "LocalHost.", "www.localhost", "a.b.localhost"))
def test_localhost_names_are_refused_whatever_the_base_domain(raw: str) -> None:
    with pytest.raises(ValidationError, match="localhost name"):
        validate_domain(raw, "apps.example.com")


def test_hostnames_still_pass_even_with_digits() -> None:
    for raw in ("www.example.com", "1.example.com", "api.v2.example.io", "x1.example.123a"):
        assert validate_domain(raw, "apps.example.com") == raw
    assert validate_domain("WWW.Example.com.", "localhost") == "www.example.com"


def test_domains_add_refuses_addresses_and_localhost_over_ssh(
    server: Server, keys: dict[str, Key]
) -> None:
    alice, bob = keys["alice"], keys["bob"]
    ok(server, alice, "apps:create", "mxdomains")
    ok(server, alice, "access:grant", "bob", "mxdomains")
    for raw in ("127.0.0.1", "[::1]", "::1", "127.1"):
        said = fails(server, bob, "domains:add", "mxdomains", raw)
        assert "is an IP address, not a domain name" in said, said
    assert "localhost name" in fails(server, bob, "domains:add", "mxdomains", "localhost")
    assert get_host(server, "127.0.0.1") == 404  # nothing took over requests by address
    assert ok(server, bob, "domains:list", "mxdomains").split()[1:] == ["(always)"]


def test_an_address_accepted_by_an_older_version_is_not_served(
    own_server: Server, keys: dict[str, Key], workdir: Path
) -> None:
    alice = keys["alice"]
    repo = AppRepo(workdir / "app", alice)
    assert repo.push(own_server.remote("mxolddomain")).returncode == 0
    ok(own_server, alice, "domains:add", "mxolddomain", "www.example.test")
    own_server.stop()
    with sqlite3.connect(own_server.data_dir / "rivetr.db") as db:  # as an older version did
        db.execute(
            "INSERT INTO app_domains (app_id, host) SELECT app_id, '127.0.0.1' "
            "FROM app_domains WHERE host = 'www.example.test'"
        )
    own_server.start()
    assert get_host(own_server, "127.0.0.1") == 404
    assert get_host(own_server, "www.example.test") == 200
    assert "domain 127.0.0.1 of mxolddomain is not served" in own_server.log()
    listed = ok(own_server, alice, "domains:list", "mxolddomain").split()
    assert "127.0.0.1" in listed  # shown, so that it can be removed
    ok(own_server, alice, "domains:remove", "mxolddomain", "127.0.0.1")
