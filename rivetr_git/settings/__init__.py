"""Server settings: declared once per group (core, builds, proxy, ssh), loaded and checked in
`load`. Everything else imports from here."""

from rivetr_git.settings.declare import setting
from rivetr_git.settings.load import (
    ENV_PREFIX,
    SETTINGS,
    Setting,
    Settings,
    load_settings,
    settings_help,
)

__all__ = [
    "ENV_PREFIX",
    "SETTINGS",
    "Setting",
    "Settings",
    "load_settings",
    "setting",
    "settings_help",
]
