"""AES-256-GCM for env var values, and the master key file that holds the key.

A stored value is `version byte | 96-bit nonce | ciphertext+tag`. The associated data binds
the app and the variable name, so a value copied to another app or name fails to decrypt.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rivetr_git.errors import ConfigError, DecryptionFailed

KEY_FILE = "master.key"
PENDING_SUFFIX = ".new"  # a rotation's new key, until it replaces KEY_FILE
KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12  # 96 bits, random per value
FORMAT_V1 = 1
_AD_TAG = b"rivetr-env-v1"


def associated_data(app: str, name: str) -> bytes:
    """Length-prefixed, so ("ab", "c") and ("a", "bc") can never collide."""
    parts = [_AD_TAG, app.encode(), name.encode()]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


class Cipher:
    """Encrypts and decrypts env var values under one master key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"an AES-256 key is {KEY_SIZE} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._key = key

    @classmethod
    def generate(cls) -> Cipher:
        return cls(AESGCM.generate_key(bit_length=KEY_SIZE * 8))

    @property
    def key(self) -> bytes:
        return self._key

    def __repr__(self) -> str:
        return "Cipher(<key hidden>)"

    def encrypt(self, app: str, name: str, value: str) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, value.encode(), associated_data(app, name))
        return bytes([FORMAT_V1]) + nonce + sealed

    def decrypt(self, app: str, name: str, blob: bytes) -> str:
        """Raises DecryptionFailed (naming app and variable, never the value)."""
        if len(blob) < 1 + NONCE_SIZE + 16 or blob[0] != FORMAT_V1:
            raise DecryptionFailed(app, name, "unknown format")
        nonce, sealed = blob[1 : 1 + NONCE_SIZE], blob[1 + NONCE_SIZE :]
        try:
            plain = self._aead.decrypt(nonce, sealed, associated_data(app, name))
        except InvalidTag:
            raise DecryptionFailed(
                app, name, "wrong master key, or the value was moved or altered"
            ) from None
        return plain.decode()

    def can_decrypt(self, app: str, name: str, blob: bytes) -> bool:
        try:
            self.decrypt(app, name, blob)
        except DecryptionFailed:
            return False
        return True


# --- the key file ----------------------------------------------------------------------------


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def read_key(path: Path) -> Cipher:
    """Load a key file; ConfigError with what to do if it is unreadable, too open or wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ConfigError(f"master key {path} is missing") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read master key {path}: {exc.strerror}; it must be a "
            "regular file readable by the user running rivetr-git"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"master key {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"master key {path} is open to other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}` and check who "
                "may have copied it (if in doubt, `rivetr-git secrets rotate`)"
            )
        if info.st_uid != os.geteuid():
            raise ConfigError(
                f"master key {path} belongs to another user (uid {info.st_uid}); "
                "run rivetr-git as its owner or `chown` the file"
            )
        key = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_SIZE:
        raise ConfigError(
            f"master key {path} holds {len(key)} bytes, not {KEY_SIZE}; it is damaged or not "
            "a rivetr-git key: restore it from a backup"
        )
    return Cipher(key)


def write_key(path: Path, cipher: Cipher) -> None:
    """Create `path` with the key: 0600 from the first byte (O_EXCL), fsynced with its dir."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, cipher.key)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pending_path(data_dir: Path) -> Path:
    return key_path(data_dir).with_name(KEY_FILE + PENDING_SUFFIX)


def open_master_key(data_dir: Path, sample: tuple[str, str, bytes] | None) -> Cipher:
    """The master key for `data_dir`, created on first use.

    `sample` is any one stored value (app, name, blob), or None when nothing is encrypted
    yet. It decides between the key file and the new key of a rotation that was interrupted
    after its database commit (then the rotation is finished here), and it proves the key
    is the right one before anything relies on it.
    """
    path, pending = key_path(data_dir), pending_path(data_dir)
    if os.path.lexists(pending):
        try:
            new: Cipher | None = read_key(pending)
        except ConfigError:
            new = None  # cut short while being written, so before any commit
        if new is not None and sample is not None and new.can_decrypt(*sample):
            os.replace(pending, path)  # the rotation committed: finish it
            sync_dir(data_dir)
        else:
            pending.unlink()  # the rotation never committed: the new key is useless
    if not os.path.lexists(path) and sample is None:
        with contextlib.suppress(FileExistsError):  # lost a race: read the winner's key
            write_key(path, Cipher.generate())
    elif not os.path.lexists(path):
        raise ConfigError(
            f"master key {path} is missing but the database holds encrypted env vars; "
            "restore the key file from your backup: without it they cannot be decrypted"
        )
    cipher = read_key(path)
    if sample is not None and not cipher.can_decrypt(*sample):
        raise ConfigError(
            f"master key {path} does not decrypt the stored env vars (the key file was "
            "replaced, or the database comes from another server); restore the right key"
        )
    return cipher
