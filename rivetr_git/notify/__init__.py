"""Events and where they go: signed JSON webhooks (webhooks.py) and notification channels
through Apprise URLs (channels.py)."""

from rivetr_git.notify.webhooks import EVENTS, Notifier, render_text, sign, verify

__all__ = ["EVENTS", "Notifier", "render_text", "sign", "verify"]
