"""The URL an app is served at, as deploys, `apps`, `apps:info` and events show it."""

from __future__ import annotations

from rivetr_git.proxy.tls.files import read_index
from rivetr_git.settings import Settings


def app_url(settings: Settings, hostname: str) -> str:
    """https when a valid certificate covers `hostname` (the published TLS index lists only
    such hosts), else http; the port only when it is not the scheme's own."""
    if settings.https_port and hostname in read_index(settings.data_dir / "tls"):
        scheme, port, default = "https", settings.https_port, 443
    else:
        scheme, port, default = "http", settings.public_port or settings.proxy_port, 80
    suffix = "" if port == default else f":{port}"
    return f"{scheme}://{hostname}{suffix}/"
