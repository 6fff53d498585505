"""The TLS state directory shared by the daemon (writer) and every data plane (readers).

Proxy worker processes and nginx run apart from the daemon, so certificates reach them
as files: keys and certificates 0600 in a 0700 directory, each replaced atomically:

    tls/index.json          {"hosts": {HOST: {"cert": "certs/APP.pem", "redirect": BOOL,
                                              "hsts": SECONDS}}}
    tls/certs/APP.pem       the chain, leaf first, then its private key
    tls/fallback.pem        a self-signed certificate for names with none
    tls/challenges/TOKEN    an ACME HTTP-01 key authorization, while an order is pending

Only hosts covered by a currently valid certificate appear in the index, so a data plane
redirects (and sends HSTS) only where HTTPS will work.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rivetr_git.proxy.tls.pem import self_signed

INDEX = "index.json"
FALLBACK = "fallback.pem"
CHALLENGE_PATH = b"/.well-known/acme-challenge/"
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass(frozen=True)
class HostPolicy:
    """How one hostname is served over HTTPS."""

    cert: str  # path of its PEM file, relative to the state dir
    redirect: bool = True  # plain HTTP gets 308 to HTTPS
    hsts: int = 0  # Strict-Transport-Security max-age; 0: none


@dataclass(frozen=True)
class AppCert:
    """An app's certificate as the daemon publishes it."""

    app: str
    chain_pem: bytes
    key_pem: bytes
    hosts: tuple[str, ...]  # the app's hostnames this certificate covers
    redirect: bool = True
    hsts: int = 0


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, replacing any old one in one rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def prepare(directory: Path) -> None:
    """Make the state dir (0700) and its fallback certificate if missing."""
    # Challenges are public by nature, and nginx's workers may run as another user.
    for sub, mode in (
        (directory, 0o711),
        (directory / "certs", 0o700),
        (directory / "challenges", 0o755),
    ):
        sub.mkdir(parents=True, exist_ok=True, mode=mode)
        sub.chmod(mode)
    fallback = directory / FALLBACK
    if not fallback.exists():
        cert, key = self_signed(["rivetr-git.invalid"])
        write_private(fallback, cert + key)


def publish(directory: Path, certs: list[AppCert]) -> bool:
    """Write every app's certificate and a new index; remove certificates no longer used.
    Returns whether anything changed (so the data planes reload only then)."""
    prepare(directory)
    changed = False
    hosts: dict[str, dict[str, Any]] = {}
    wanted = set()
    for cert in certs:
        name = f"certs/{cert.app}.pem"
        wanted.add(name)
        path = directory / name
        data = cert.chain_pem + cert.key_pem
        if not path.exists() or path.read_bytes() != data:
            write_private(path, data)
            changed = True
        for host in cert.hosts:
            hosts[host] = {"cert": name, "redirect": cert.redirect, "hsts": cert.hsts}
    index = json.dumps({"hosts": hosts}, sort_keys=True).encode()
    path = directory / INDEX
    if not path.exists() or path.read_bytes() != index:
        write_private(path, index)
        changed = True
    for old in (directory / "certs").glob("*.pem"):
        if f"certs/{old.name}" not in wanted:
            old.unlink(missing_ok=True)
            changed = True
    return changed


def read_index(directory: Path) -> dict[str, HostPolicy]:
    """Host -> policy as last published ({} before the first publish)."""
    try:
        data = json.loads((directory / INDEX).read_bytes())
    except FileNotFoundError:
        return {}
    return {host: HostPolicy(**entry) for host, entry in data["hosts"].items()}


def put_challenge(directory: Path, token: str, key_authorization: str) -> None:
    if not TOKEN.fullmatch(token):
        raise ValueError("an ACME token is base64url text")
    prepare(directory)
    path = directory / "challenges" / token
    tmp = path.with_name(f"{token}.{os.getpid()}.tmp")
    tmp.write_text(key_authorization)
    tmp.chmod(0o644)  # nginx's workers serve it (they may run as another user)
    os.replace(tmp, path)


def drop_challenge(directory: Path, token: str) -> None:
    if TOKEN.fullmatch(token):
        (directory / "challenges" / token).unlink(missing_ok=True)


def challenge_answer(directory: Path, path: bytes) -> bytes | None:
    """The key authorization for a request path under CHALLENGE_PATH, or None."""
    token = path[len(CHALLENGE_PATH) :].decode("latin-1")
    if not TOKEN.fullmatch(token):
        return None
    try:
        return (directory / "challenges" / token).read_bytes()
    except OSError:
        return None
