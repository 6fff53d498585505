"""HTTPS for the nginx data plane: the same certificates, redirects, HSTS and challenges.

nginx reads the certificate files the daemon publishes (proxy/tls/files.py) straight from
the TLS state dir, so a new certificate is one graceful reload away. The protocol rules
match the built-in proxy's (proxy/tls/contexts.py): TLS 1.2 and 1.3, ECDHE with AES-GCM
or ChaCha20 for 1.2, session tickets and a shared session cache, and nginx's own ALPN
(http/1.1, since HTTP/2 is not enabled). nginx's client_header_timeout also bounds the
handshake.
"""

from __future__ import annotations

from pathlib import Path

from rivetr_git.proxy.tls.contexts import CIPHERS_TLS12
from rivetr_git.proxy.tls.files import FALLBACK, HostPolicy


def tls_head() -> str:
    """Directives for the http block."""
    return (
        f"    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_ciphers {CIPHERS_TLS12};\n"
        "    ssl_prefer_server_ciphers off;\n"
        "    ssl_session_cache shared:rivetr_tls:10m;\n    ssl_session_tickets on;\n"
    )


def challenge_location(tls_dir: Path) -> str:
    return (
        "        location ^~ /.well-known/acme-challenge/ {\n"
        f"            alias {tls_dir}/challenges/;\n"
        "            default_type application/octet-stream;\n        }\n"
    )


def certificate_lines(tls_dir: Path, pem: str) -> str:
    path = tls_dir / pem
    return f"        ssl_certificate {path};\n        ssl_certificate_key {path};\n"


def https_extra(tls_dir: Path, policy: HostPolicy) -> str:
    """What an app's server block gets on the HTTPS listener: its certificate, HSTS."""
    hsts = (
        f'        add_header Strict-Transport-Security "max-age={policy.hsts}" always;\n'
        if policy.hsts > 0
        else ""
    )
    return certificate_lines(tls_dir, policy.cert) + hsts


def redirect_server(host: str, listen: str, https_port: int, tls_dir: Path) -> str:
    """The plain-HTTP server of a host that redirects: challenges, else 308 to HTTPS."""
    port = "" if https_port == 443 else f":{https_port}"
    return (
        f"    server {{\n        listen {listen};\n        server_name {host};\n"
        f"{challenge_location(tls_dir)}"
        f"        location / {{ return 308 https://$host{port}$request_uri; }}\n    }}\n"
    )


def fallback_server(listen_https: str, tls_dir: Path, page: str) -> str:
    """Names with no certificate (or no SNI): the self-signed fallback and the 404 page."""
    return (
        f"    server {{\n        listen {listen_https} ssl default_server reuseport;\n"
        f"        server_name _;\n{certificate_lines(tls_dir, FALLBACK)}"
        f"        default_type text/html;\n        location / {{ return 404 '{page}'; }}\n"
        "    }\n"
    )


def no_app_server(host: str, listen_https: str, extra: str, page: str) -> str:
    """A host with a certificate but no running app: its certificate, then the 404 page."""
    return (
        f"    server {{\n        listen {listen_https} ssl;\n        server_name {host};\n"
        f"{extra}        default_type text/html;\n"
        f"        location / {{ return 404 '{page}'; }}\n    }}\n"
    )
