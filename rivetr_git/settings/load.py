"""Server settings, each declared once (name, type, default, help, check) in a group module.

Read from defaults < a TOML file < RIVETR_* env vars < explicit overrides. The same
declarations drive `serve --help`, validation and a test that the README lists every setting.
Value checks come from `validate` (one rule per kind of value, shared with app settings and
`rivetr.toml`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from rivetr_git.errors import ConfigError
from rivetr_git.settings.api import ApiSettings
from rivetr_git.settings.builds import BuildSettings
from rivetr_git.settings.core import CoreSettings
from rivetr_git.settings.proxy import ProxySettings
from rivetr_git.settings.services import ServiceSettings
from rivetr_git.settings.ssh import SshSettings

ENV_PREFIX = "RIVETR_"


# Groups are declared in their own modules; the help lists them in this order, backwards.
@dataclass(frozen=True)
class Settings(
    ApiSettings, ServiceSettings, SshSettings, ProxySettings, BuildSettings, CoreSettings
):
    @property
    def db_path(self) -> Path:
        return self.data_dir / "rivetr.db"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"


@dataclass(frozen=True)
class Setting:
    """One declared setting, as `serve --help`, the loader and the tests see it."""

    name: str
    type: type
    default: Any
    help: str
    parse: Callable[[object], Any]


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, type(f.default), f.default, f.metadata["help"], f.metadata["parse"])
    for f in fields(Settings)
)
_BY_NAME = {s.name: s for s in SETTINGS}


def _convert(setting: Setting, raw: Any, source: str) -> Any:
    """Turn `raw` (a TOML value or an env string) into the setting's checked value."""
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(
            f"setting '{setting.name}' (from {source}): bad value {raw!r}: {exc}"
        ) from None


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from defaults < TOML file < RIVETR_* env < explicit overrides.

    Raises ConfigError naming the setting and what a good value looks like.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        table = data.pop("server", {})
        if not isinstance(table, dict):
            raise ConfigError(
                f"config file {config_file}: 'server' must be a table ([server]), not a value"
            )
        for key, raw in {**data, **table}.items():
            if key in data and key in table:
                raise ConfigError(
                    f"config file {config_file}: '{key}' is set twice, at the top and in "
                    "[server]; keep one"
                )
            setting = _BY_NAME.get(key)
            if setting is None:
                raise ConfigError(
                    f"config file {config_file}: unknown setting '{key}'; "
                    "run `rivetr-git serve --help` for the list"
                )
            values[key] = _convert(setting, raw, str(config_file))
    for setting in SETTINGS:
        var = ENV_PREFIX + setting.name.upper()
        if var in env:
            values[setting.name] = _convert(setting, env[var], var)
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        setting = _BY_NAME[key]
        values[key] = _convert(setting, raw, "command line")
    settings = Settings(**values)
    return _resolve(settings)


def _resolve(settings: Settings) -> Settings:
    """Make data_dir absolute so every component agrees on it."""
    return replace(settings, data_dir=settings.data_dir.expanduser().resolve())


def settings_help() -> str:
    """One line per setting: name, env var, default, meaning."""
    lines = ["settings (TOML key / env var, default: meaning):"]
    for s in SETTINGS:
        default = str(s.default) if s.default != "" else "''"
        lines.append(f"  {s.name} / {ENV_PREFIX}{s.name.upper()}, default {default}: {s.help}")
    return "\n".join(lines)
