"""The one exception tree of rivetr-git.

Library code raises these; only the edges (SSH session, HTTP proxy, CLI) turn them
into text and exit codes.
"""

from __future__ import annotations


class RivetrError(Exception):
    """Base of every error rivetr-git raises on purpose. The message is user advice."""

    exit_code = 1


class ConfigError(RivetrError):
    """A setting or configuration file is invalid."""

    exit_code = 2


class ValidationError(RivetrError):
    """User input (a name, an argument, a key) is invalid."""

    exit_code = 2


class UsageHelp(RivetrError):
    """Not a failure: the caller asked for help; the message is the help text."""

    exit_code = 0


class NotFound(RivetrError):
    """An app, deployment or key does not exist (or is not visible to the caller)."""


class ServerNotRunning(RivetrError):
    """A local command needs the server of its data dir, and that server is not running."""


class AlreadyExists(RivetrError):
    """Something with that name already exists."""


class AccessDenied(RivetrError):
    """The caller's key may not do this."""


class RuntimeUnavailable(RivetrError):
    """The container runtime cannot be reached."""


class RuntimeOperationError(RivetrError):
    """A container runtime call failed."""


class DeployFailed(RivetrError):
    """A deployment failed at `stage` for `reason`."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class CheckoutFailed(DeployFailed):
    def __init__(self, reason: str) -> None:
        super().__init__("cloning", reason)


class BuildFailed(DeployFailed):
    def __init__(self, reason: str) -> None:
        super().__init__("building", reason)


class StartFailed(DeployFailed):
    def __init__(self, reason: str) -> None:
        super().__init__("starting", reason)


class HealthCheckFailed(DeployFailed):
    def __init__(self, reason: str) -> None:
        super().__init__("health_check", reason)


class DecryptionFailed(RivetrError):
    """A stored env var value does not decrypt. Names the app and variable, never a value."""

    def __init__(self, app: str, name: str, why: str) -> None:
        super().__init__(f"env var {name} of app {app} cannot be decrypted ({why})")
        self.app = app
        self.name = name


class ClientError(RivetrError):
    """Client mode could not reach the server, trust it or log in; nothing ran there.

    Exit status 255, as ssh uses, so scripts can tell it from the verb's own failure.
    """

    exit_code = 255


class HostKeyUnknown(ClientError):
    """The server's host key is in no known_hosts file; it was not accepted."""


class HostKeyMismatch(ClientError):
    """The server offered a host key other than the one known_hosts holds for it."""


class ServiceFailed(RivetrError):
    """A backing service did not become healthy, or a backup or restore of it failed."""
