"""Value checks, each written once: server settings, app settings and `rivetr.toml` share them.

A check takes a value as it arrives (a string from the command line, SSH or an env var, or a
TOML value), returns it typed, or raises ValueError saying what a good value looks like. The
edge that called it names the key and picks the error (ConfigError for a server setting,
ValidationError for an app setting, CheckoutFailed for `rivetr.toml`), so the same value gets
the same answer everywhere.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from rivetr_git.errors import ValidationError
from rivetr_git.names import validate_branch_name

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_SECONDS = 7 * 86400  # longer than any timeout anyone means; catches typos like 3e9
MAX_RETRIES = 10000  # health check attempts
BUILD_TYPES = ("dockerfile", "compose", "railpack", "pack", "nixpacks", "static")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ALG_NAME = re.compile(r"[A-Za-z0-9@._+-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]?b?)", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
}


def _number(value: object, what: str) -> float:
    """A TOML/JSON number or a string of one (never a bool, which Python calls a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected {what}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected {what}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected {what}")
    return number


def text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def boolean(value: object) -> bool:
    """true/false, yes/no, on/off, 1/0 (any case), or a TOML boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE:
        return True
    if isinstance(value, str) and value.lower() in _FALSE:
        return False
    raise ValueError("expected true or false")


def count(value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number from `minimum` to `maximum` (None: no upper bound)."""
    what = (
        f"a whole number from {minimum} to {maximum}"
        if maximum is not None
        else f"a whole number of at least {minimum}"
    )
    number = _number(value, what)
    if number != int(number) or (
        isinstance(value, str) and not value.strip().lstrip("-").isdigit()
    ):
        raise ValueError(f"expected {what}")
    if number < minimum or (maximum is not None and number > maximum):
        raise ValueError(f"expected {what}")
    return int(number)


def retries(value: object) -> int:
    """Health check attempts: one bound for server settings, app settings and rivetr.toml."""
    return count(value, 1, MAX_RETRIES)


def number(value: object, zero_ok: bool = False) -> float:
    """A finite number above 0 (or 0 when `zero_ok`: it then means off)."""
    what = "a number of at least 0" if zero_ok else "a number greater than 0"
    found = _number(value, what)
    if found < 0 or (found == 0 and not zero_ok):
        raise ValueError(f"expected {what}")
    return found


def seconds(value: object, zero_ok: bool = False) -> float:
    """A duration in seconds, above 0 (or 0 when `zero_ok`: it then means off/none)."""
    what = (
        "seconds, 0 or more" if zero_ok else "seconds, more than 0"
    ) + f" and at most {MAX_SECONDS}"
    number = _number(value, what)
    if number < 0 or (number == 0 and not zero_ok) or number > MAX_SECONDS:
        raise ValueError(f"expected {what}")
    return number


def port(value: object, zero_ok: bool = False) -> int:
    """A TCP port, 1-65535 (0 too when `zero_ok`: pick a free one)."""
    low = 0 if zero_ok else 1
    try:
        return count(value, low, 65535)
    except ValueError:
        raise ValueError(
            f"expected a TCP port from {low} to 65535"
            + (" (0 picks a free one)" if zero_ok else "")
        ) from None


def http_path(value: object) -> str:
    """An HTTP path: '/' first, no whitespace or control characters."""
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise ValueError("expected an HTTP path starting with '/', e.g. /health")
    return value


def http_url(value: object) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith(("http://", "https://"))
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise ValueError("expected an http:// or https:// URL, e.g. https://hooks.example.com/x")
    return value


_SCP_URL = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/\\].*")


def git_url(value: object) -> str:
    """A git host URL: https:// (http:// too), ssh://, or scp-style user@host:path; no
    password in it (the token is set apart, so it is stored encrypted)."""
    url = value if isinstance(value, str) else ""
    if not url or url.startswith("-") or any(c.isspace() or not c.isprintable() for c in url):
        url = ""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("http", "https", "ssh"):
        userinfo = rest.split("/", 1)[0].rpartition("@")[0]
        if ":" in userinfo:
            raise ValueError("put no password in the URL: set it apart with token=...")
        if rest.split("/", 1)[0].rpartition("@")[2]:
            return url
    elif not sep and _SCP_URL.fullmatch(url):
        return url
    raise ValueError(
        "expected a git URL: https://host/owner/repo.git, ssh://git@host/owner/repo.git "
        "or git@host:owner/repo.git"
    )


def env_name(value: object) -> str:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "expected an env var name: letters, digits and '_', not starting "
            "with a digit, e.g. DATABASE_URL"
        )
    return value


def repo_path(value: object) -> str:
    """A path inside the pushed repository: relative, no '..', no backslashes."""
    path = PurePosixPath(value) if isinstance(value, str) else None
    if path is None or not value or path.is_absolute() or ".." in path.parts or "\\" in str(value):
        raise ValueError("expected a path inside the repository")
    return str(path)


def image(value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError("expected an image reference such as nginx:1.27-alpine")
    return value


def host(value: object) -> str:
    """An IP address or a host name to listen on."""
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            if _HOSTNAME.fullmatch(value):
                return value
    raise ValueError("expected an IP address or host name, e.g. 127.0.0.1 or 0.0.0.0")


def domain(value: object) -> str:
    """A DNS name, lower-cased, trailing dot dropped. ASCII only: browsers send
    internationalized names as punycode (xn--...)."""
    labels = value.lower().rstrip(".").split(".") if isinstance(value, str) else []
    if not value or not labels or not all(_LABEL.fullmatch(lab) for lab in labels):
        raise ValueError("expected a domain name such as 'localhost' or 'apps.example.com'")
    return ".".join(labels)


def branch(value: object) -> str:
    try:
        return validate_branch_name(text(value))
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def build_type(value: object) -> str:
    """'' or 'auto' (detect from the tree) or one of BUILD_TYPES."""
    if isinstance(value, str) and (value in ("", "auto") or value in BUILD_TYPES):
        return value
    raise ValueError(f"{value!r} is not a build type; use one of auto, {', '.join(BUILD_TYPES)}")


def one_of(*choices: str, expected: str) -> Callable[[object], str]:
    """A check that the value is one of `choices`; `expected` says which, for the error."""

    def check(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected {expected}")
        return str(value)

    return check


def size(value: object) -> int:
    """'512m', '0.5g', '1GB', '64k', '1048576' -> bytes."""
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not match:
        raise ValueError(f"{value!r} is not a size; use e.g. 64k, 512m, 0.5g or 2gb")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def memory(value: object) -> int:
    """A container memory limit: a size, at least Docker's minimum of 6m."""
    found = size(value)
    if found < 6 * 1024**2:
        raise ValueError(f"{value!r} is below Docker's minimum of 6m; use e.g. 512m")
    return found


def cpus(value: object) -> float:
    """'1.5' -> 1.5 CPUs."""
    try:
        found = _number(value, "")
    except ValueError:
        raise ValueError(f"{value!r} is not a number of CPUs; use e.g. 0.5 or 2") from None
    if found <= 0:
        raise ValueError(f"{value!r} must be a positive number of CPUs, e.g. 0.5 or 2")
    return found


def networks(value: object) -> tuple[Network, ...]:
    """'10.0.0.0/8, 127.0.0.1' -> networks."""
    found: list[Network] = []
    for item in text(value).replace(" ", ",").split(","):
        if not item:
            continue
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or network; expected e.g. 10.0.0.0/8, 127.0.0.1"
            ) from None
    return tuple(found)


def kept(check: Callable[[object], object]) -> Callable[[object], str]:
    """For values kept as written ('512m', '1.5', a URL): check the value, keep the string;
    '' (off) passes as it is."""

    def parse(value: object) -> str:
        found = text(value)
        if found:
            check(found)
        return found

    return parse


def optional(check: Callable[[object], object]) -> Callable[[object], object]:
    """`check`, except that '' (off / not set) passes as it is."""

    def checked(value: object) -> object:
        return value if value == "" else check(value)

    return checked


def directory(value: object) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError("expected a directory path")
    return Path(value)


def log_level(value: object) -> str:
    found = text(value).upper()
    if found not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected one of debug, info, warning, error")
    return found


def algorithm_list(value: object) -> str:
    """Comma-separated SSH algorithm names (what asyncssh supports is checked when the
    receiver starts)."""
    names = [n.strip() for n in text(value).split(",")]
    if not all(_ALG_NAME.fullmatch(n) for n in names):
        raise ValueError(
            "expected algorithm names separated by commas, e.g. "
            "curve25519-sha256,diffie-hellman-group16-sha512"
        )
    return ",".join(names)


def private_ipv4_range(value: object) -> str:
    """A private IPv4 range of /26 or larger (each app network takes a /26); '' is off."""
    found = text(value)
    if found:
        try:
            network = ipaddress.IPv4Network(found)
        except ValueError:
            raise ValueError("expected an IPv4 network such as 10.213.0.0/16") from None
        if not network.is_private or network.prefixlen > 26:
            raise ValueError(
                "expected a private IPv4 range of /26 or larger, e.g. "
                "10.213.0.0/16 (each app takes a /26)"
            )
    return found


def email(value: object) -> str:
    """An email address ('' : none)."""
    found = text(value).strip()
    if found and (found.count("@") != 1 or any(c.isspace() for c in found)):
        raise ValueError("expected an email address such as admin@example.com ('': none)")
    return found


def ca_file(value: object) -> str:
    """The path of an existing file of CA certificates ('': the system's)."""
    found = text(value)
    if found and not Path(found).expanduser().is_file():
        raise ValueError("expected the path of a PEM file of CA certificates ('': the system's)")
    return found


def absolute_path(value: object) -> str:
    """An absolute path ('': none): a relative one would depend on the server's cwd."""
    found = text(value)
    if found and not Path(found).is_absolute():
        raise ValueError("expected an absolute path such as /srv/rivetr-storage ('': none)")
    return found
