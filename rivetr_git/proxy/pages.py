"""What the proxy says itself: small error pages that reveal nothing, and its status page."""

from __future__ import annotations

from http import HTTPStatus

_TITLES = {413: "Content Too Large"}


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def response(status: int, body: bytes, content_type: bytes, close: bool, head_only: bool) -> bytes:
    """A complete HTTP/1.1 response in one buffer."""
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\nServer: rivetr\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (status, reason(status), content_type, len(body)),
            b"Connection: close\r\n\r\n" if close else b"\r\n",
            b"" if head_only else body,
        )
    )


def page(status: int, detail: str, close: bool = False, head_only: bool = False) -> bytes:
    """An HTML error page: the status and one sentence; never internals."""
    title = _TITLES.get(status) or reason(status).decode()
    body = (
        f"<!doctype html><title>{status} {title}</title><h1>{title}</h1><p>{detail}</p>\n"
    ).encode()
    return response(status, body, b"text/html; charset=utf-8", close, head_only)


def text(body: str, head_only: bool = False) -> bytes:
    return response(200, body.encode(), b"text/plain; charset=utf-8", False, head_only)
