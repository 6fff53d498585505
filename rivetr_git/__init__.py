"""rivetr-git: push-to-deploy over SSH onto containers, behind a built-in reverse proxy."""

__version__ = "0.1.0"
