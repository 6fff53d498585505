"""Settings of the SSH receiver: listener, pre-auth limits and throttling, algorithms, push size."""

from __future__ import annotations

from dataclasses import dataclass

from rivetr_git import validate
from rivetr_git.settings.declare import (
    _algs,
    _count,
    _port,
    _rate_or_off,
    _seconds,
    _seconds_or_off,
    setting,
)

# What a current OpenSSH offers, less what ssh-audit fails. asyncssh has no sntrup761;
# mlkem768x25519 is the post-quantum hybrid here (OpenSSH 9.9+).
SSH_KEX_ALGS = (
    "mlkem768x25519-sha256,curve25519-sha256,curve25519-sha256@libssh.org,"
    "diffie-hellman-group18-sha512,diffie-hellman-group16-sha512"
)
SSH_CIPHERS = (
    "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,"
    "aes256-ctr,aes192-ctr,aes128-ctr"
)
SSH_MACS = "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com"


@dataclass(frozen=True)
class SshSettings:
    ssh_host: str = setting("0.0.0.0", "address the SSH receiver listens on", validate.host)
    ssh_port: int = setting(2222, "SSH receiver port (0: pick a free one)", _port)
    ssh_max_startups: int = setting(
        100,
        "SSH connections not yet authenticated, from everyone; more are dropped before "
        "the key exchange",
        _count,
    )
    ssh_max_startups_per_source: int = setting(
        20,
        "SSH connections not yet authenticated from one address; more are dropped before "
        "the key exchange",
        _count,
    )
    ssh_handshake_rate: float = setting(
        5.0,
        "SSH handshakes per second one address may start once its burst is used; faster "
        "ones wait (DHEat guard; 0: no throttling)",
        _rate_or_off,
    )
    ssh_handshake_burst: int = setting(
        10,
        "SSH handshakes one address may start at once before ssh_handshake_rate applies",
        _count,
    )
    ssh_login_grace_time: float = setting(
        30.0,
        "seconds an SSH client has to authenticate before it is disconnected",
        _seconds,
    )
    ssh_max_auth_tries: int = setting(
        10,
        "public keys one SSH connection may offer (probes count; the key that signs "
        "counts twice) before it is disconnected",
        _count,
    )
    ssh_idle_timeout: float = setting(
        300.0,
        "a git session that moves no data for this many seconds (while no deploy "
        "runs) is closed and its git ended (0: never)",
        _seconds_or_off,
    )
    ssh_kex_algs: str = setting(SSH_KEX_ALGS, "SSH key exchanges offered, comma-separated", _algs)
    ssh_ciphers: str = setting(SSH_CIPHERS, "SSH ciphers offered, comma-separated", _algs)
    ssh_macs: str = setting(
        SSH_MACS,
        "SSH MACs offered, comma-separated (AEAD ciphers need none)",
        _algs,
    )
    max_push_size: str = setting(
        "100m",
        "largest pack one push may send, e.g. 100m or 1g (git's receive.maxInputSize; "
        "'' or 0: no limit)",
        validate.kept(validate.size),
    )
