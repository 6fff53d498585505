"""PEM bundles: parse and check a certificate chain and its key, make keys and fallbacks.

Everything here is pure (no files, no database): the admin verbs check an upload with
`read_bundle`, the ACME client makes keys and CSRs, the proxy makes its self-signed
fallback with `self_signed`. Error messages never contain key material.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from rivetr_git.errors import ValidationError

_BEGIN_CERT = b"-----BEGIN CERTIFICATE-----"
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertInfo:
    """What `certs APP` shows about a certificate."""

    names: tuple[str, ...]  # DNS names of its subjectAltName (or its CN, when it has none)
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime

    def covers(self, host: str) -> bool:
        """True if one of its names (a wildcard matches exactly one label) is `host`."""
        host = host.lower().rstrip(".")
        for name in self.names:
            if name == host:
                return True
            if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
                return True
        return False

    def valid_at(self, when: datetime.datetime) -> bool:
        return self.not_before <= when < self.not_after


@dataclass(frozen=True)
class Bundle:
    """A checked chain (leaf first) and its private key, both as PEM."""

    chain_pem: bytes
    key_pem: bytes
    info: CertInfo


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def cert_info(cert: x509.Certificate) -> CertInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = tuple(
            str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
    issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertInfo(
        names=names,
        issuer=str(issuer[0].value) if issuer else cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def chain_info(chain_pem: bytes) -> CertInfo:
    """The leaf's info of a stored (already checked) chain."""
    return cert_info(x509.load_pem_x509_certificates(chain_pem)[0])


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_key(data: bytes) -> PrivateKey:
    start = data.find(b"-----BEGIN ")
    while start >= 0:
        end_marker = data.find(b"-----END ", start)
        line_end = data.find(b"-----", end_marker + 9) if end_marker >= 0 else -1
        if line_end < 0:
            break
        block = data[start : line_end + 5]
        if b"PRIVATE KEY-----" in block[:40]:
            try:
                key = serialization.load_pem_private_key(block, password=None)
            except (ValueError, TypeError):
                raise ValidationError(
                    "the private key in the bundle cannot be read (it must "
                    "be unencrypted PEM: RSA or EC)"
                ) from None
            if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
                raise ValidationError("the private key must be RSA or EC (ECDSA)")
            return key
        start = data.find(b"-----BEGIN ", line_end)
    raise ValidationError(
        "the bundle has no private key; send the certificate chain and "
        "its key in one PEM file, e.g. cat fullchain.pem privkey.pem"
    )


def read_bundle(data: bytes, now: datetime.datetime | None = None) -> Bundle:
    """Check an uploaded PEM bundle: a chain (leaf first) and the leaf's unencrypted key.

    Raises ValidationError saying what is wrong: nothing readable, no key, a key that
    does not belong to the certificate, a certificate not valid now.
    """
    if _BEGIN_CERT not in data:
        raise ValidationError(
            "no PEM certificate found on stdin; send the certificate chain "
            "and its private key in one PEM file"
        )
    try:
        chain = x509.load_pem_x509_certificates(data[data.find(_BEGIN_CERT) :])
    except ValueError:
        raise ValidationError("a certificate in the bundle is not valid PEM") from None
    key = _load_key(data)
    leaf = chain[0]
    if _public_bytes(leaf.public_key()) != _public_bytes(key.public_key()):
        raise ValidationError(
            "the private key does not belong to the first certificate "
            "of the bundle (put the server certificate first)"
        )
    info = cert_info(leaf)
    now = now or utcnow()
    if info.not_after <= now:
        raise ValidationError(
            f"the certificate expired on {info.not_after:%Y-%m-%d %H:%M} UTC; renew it first"
        )
    if info.not_before > now:
        raise ValidationError(
            f"the certificate is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC"
        )
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return Bundle(chain_pem=chain_pem, key_pem=key_pem(key), info=info)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A certificate key: ECDSA P-256 (fast handshakes, what Let's Encrypt issues for)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def csr_pem(key: PrivateKey, names: list[str]) -> bytes:
    """A certificate request for `names` (the first is also the subject's CN)."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def self_signed(
    names: list[str], days: int = 3650, not_after: datetime.datetime | None = None
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a self-signed certificate for `names` (DNS or IPs)."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    now = utcnow()
    end = not_after or now + datetime.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(
            min(now - datetime.timedelta(minutes=5), end - datetime.timedelta(days=1))
        )
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)
