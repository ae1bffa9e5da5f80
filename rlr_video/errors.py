"""Errors in what a user wrote: a config key and its value, or a config file.

A leaf module (it imports nothing of the library), so every layer can raise them: the config
loader, an estimator's own config, the FSDP settings of a launch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """An invalid config value: ``key`` (dotted), the offending ``value`` and what is ``allowed``."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config key '{key}': {value!r} is not valid; allowed: {allowed}")


class ConfigFileError(ConfigError):
    """A config file that YAML or omegaconf cannot read: the message names the file, the line
    (where known) and the key (where known)."""

    def __init__(self, path: Path, line: int | None, key: str | None, reason: str):
        self.path, self.line = path, line
        self.key, self.value, self.allowed = key, None, reason
        where = f"{path}:{line}" if line else str(path)
        ValueError.__init__(self, f"{where}: {f'config key {key!r}: ' if key else ''}{reason}")


class UnknownConfigError(ConfigError):
    """CONFIG (the first argument) is neither a YAML file nor a preset: the message says what
    was given and lists the presets; it is no config key, so it does not pretend to be one."""

    def __init__(self, given: str, presets: list[str], close: str | None):
        self.key, self.value, self.allowed = "CONFIG", given, f"a YAML file or a preset: {', '.join(presets)}"
        hint = f" (did you mean '{close}'?)" if close else ""
        ValueError.__init__(self, f"no preset or YAML file named {given!r}{hint}; presets: {', '.join(presets)}")
