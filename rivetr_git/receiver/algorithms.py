"""Which SSH algorithms the receiver offers: the settings' lists, checked against asyncssh.

The defaults are what a current OpenSSH server offers, minus what ssh-audit fails or warns
about: no SHA-1, no NIST curves, no small-modulus group exchange, no
encrypt-and-MAC or 64-bit-tag MACs, no compression before authentication.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncssh.compression import get_compression_algs
from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs

from rivetr_git.errors import ConfigError
from rivetr_git.settings import Settings


@dataclass(frozen=True)
class Algorithms:
    kex: list[str]
    ciphers: list[str]
    macs: list[str]
    compression: list[str]

    def as_options(self) -> dict[str, list[str]]:
        """Keyword arguments for asyncssh's connection options."""
        return {
            "kex_algs": self.kex,
            "encryption_algs": self.ciphers,
            "mac_algs": self.macs,
            "compression_algs": self.compression,
        }


def _names(setting: str, value: str, supported: list[bytes]) -> list[str]:
    known = [alg.decode() for alg in supported]
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"setting '{setting}' is empty; name at least one algorithm")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"setting '{setting}': unknown algorithm(s) {', '.join(unknown)}; this server "
            f"supports: {', '.join(known)}"
        )
    return names


def algorithms(settings: Settings) -> Algorithms:
    """The lists to offer. Raises ConfigError naming any algorithm asyncssh does not know."""
    return Algorithms(
        kex=_names("ssh_kex_algs", settings.ssh_kex_algs, get_kex_algs()),
        ciphers=_names("ssh_ciphers", settings.ssh_ciphers, get_encryption_algs()),
        macs=_names("ssh_macs", settings.ssh_macs, get_mac_algs()),
        # Git packs are compressed already; zlib before auth is an attack surface.
        compression=_names("compression", "none", get_compression_algs()),
    )
