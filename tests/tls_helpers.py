"""HTTPS test helpers: certificates made with the `openssl` CLI and `cryptography`, real TLS
clients (Python's ssl), SSH verbs, and a daemon with HTTPS on a free port."""

from __future__ import annotations

import datetime
import shlex
import socket
import ssl
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import Key, Server, run, ssh_command


def openssl_cert(work: Path, name: str, *hosts: str) -> tuple[str, str]:
    """(certificate PEM, key PEM) of a self-signed certificate for `hosts`, by openssl."""
    work.mkdir(parents=True, exist_ok=True)
    cert, key = work / f"{name}.crt", work / f"{name}.key"
    alt = ",".join(f"DNS:{h}" for h in hosts)
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            f"/CN={hosts[0]}",
            "-addext",
            f"subjectAltName={alt}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ]
    )
    return cert.read_text(), key.read_text()


def expired_cert(host: str) -> tuple[str, str]:
    """A certificate for `host` that expired yesterday (openssl 3.0 cannot back-date)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def verb(
    server: Server, key: Key, *argv: str, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    command = [
        *ssh_command(key.private).split(),
        "-p",
        str(server.ssh_port),
        "git@127.0.0.1",
        shlex.join(argv),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=stdin)


def ok(server: Server, key: Key, *argv: str, stdin: str = "") -> str:
    result = verb(server, key, *argv, stdin=stdin)
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


def fails(server: Server, key: Key, *argv: str, stdin: str = "") -> str:
    result = verb(server, key, *argv, stdin=stdin)
    assert result.returncode != 0, f"{argv} succeeded: {result.stdout}"
    return result.stderr


def tls_client(ca_pem: str | None) -> ssl.SSLContext:
    """A client that trusts only `ca_pem` (None: trusts anything, checks nothing)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_pem is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca_pem)
    return context


def served_cert(port: int, sni: str) -> str:
    """The PEM of the leaf certificate the server presents for `sni`."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        tls_client(None).wrap_socket(raw, server_hostname=sni) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der)


def https_get(port: int, host: str, ca_pem: str | None, path: str = "/") -> bytes:
    """GET over TLS with SNI and Host `host`, verified against `ca_pem`; the raw answer."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        tls_client(ca_pem).wrap_socket(raw, server_hostname=host) as conn,
    ):
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data


def same_cert(pem_a: str, pem_b: str) -> bool:
    a = x509.load_pem_x509_certificate(pem_a.encode())
    b = x509.load_pem_x509_certificate(pem_b.encode())
    return a.fingerprint(hashes.SHA256()) == b.fingerprint(hashes.SHA256())
