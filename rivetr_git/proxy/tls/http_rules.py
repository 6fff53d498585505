"""What HTTPS changes for plain requests: ACME challenges, the 308 redirect, HSTS.

Shared by the built-in proxy's request path; nginx gets the same rules in its config
(proxy/nginx_config.py).
"""

from __future__ import annotations

from rivetr_git.proxy.pages import response
from rivetr_git.proxy.routes import normalize_host
from rivetr_git.proxy.tls.contexts import TlsContexts
from rivetr_git.proxy.tls.files import CHALLENGE_PATH, challenge_answer


def redirect_location(host: str, https_port: int, target: bytes) -> bytes:
    port = "" if https_port == 443 else f":{https_port}"
    path = target if target.startswith(b"/") else b"/"
    return f"https://{host}{port}".encode() + path


def plain_answer(
    tls: TlsContexts, host_header: bytes, target: bytes, method: bytes, https_port: int
) -> bytes | None:
    """The proxy's own answer to a plain-HTTP request, or None to route it as usual.

    `/.well-known/acme-challenge/TOKEN` gets the pending key authorization (or 404), for
    any Host; a host with a valid certificate and redirects on gets 308 to HTTPS.
    """
    path = target.split(b"?", 1)[0]
    head_only = method == b"HEAD"
    if path.startswith(CHALLENGE_PATH):
        answer = challenge_answer(tls.directory, path)
        if answer is None:
            return response(404, b"no such challenge\n", b"text/plain", False, head_only)
        return response(200, answer, b"application/octet-stream", False, head_only)
    host = normalize_host(host_header.decode("latin-1"))
    policy = tls.policy(host)
    if policy is None or not policy.redirect:
        return None
    location = redirect_location(host, https_port, target)
    return (
        b"HTTP/1.1 308 Permanent Redirect\r\nServer: rivetr\r\nLocation: %s\r\n"
        b"Content-Length: 0\r\n\r\n" % location
    )


def sts_line(tls: TlsContexts, host_header: bytes) -> bytes:
    """The Strict-Transport-Security line for an answer over HTTPS ('' when off)."""
    policy = tls.policy(normalize_host(host_header.decode("latin-1")))
    if policy is None or policy.hsts <= 0:
        return b""
    return b"Strict-Transport-Security: max-age=%d\r\n" % policy.hsts
