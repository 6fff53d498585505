"""SSH public keys: parsing and the SHA256 fingerprints that identify them."""

from __future__ import annotations

from dataclasses import dataclass

import asyncssh

from rivetr_git.errors import ValidationError


@dataclass(frozen=True)
class PublicKey:
    openssh: str  # "ssh-ed25519 AAAA..." without the comment
    fingerprint: str  # "SHA256:..."


def parse_public_key(text: str) -> PublicKey:
    """Parse one OpenSSH public key line. Raises ValidationError with advice."""
    if "PRIVATE KEY" in text:
        raise ValidationError("that is a private key; give the .pub file instead")
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise ValidationError(
            "expected exactly one OpenSSH public key line (like the contents of "
            "~/.ssh/id_ed25519.pub)"
        )
    try:
        key = asyncssh.import_public_key(lines[0])
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValidationError(
            f"not a valid OpenSSH public key ({exc}); give a file like ~/.ssh/id_ed25519.pub"
        ) from None
    openssh = key.export_public_key("openssh").decode().split()
    return PublicKey(openssh=" ".join(openssh[:2]), fingerprint=key.get_fingerprint("sha256"))


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")
