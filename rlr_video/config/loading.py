"""Loading a run's config: a preset or YAML file, ``key=value`` overrides, then validation.

Both are parsed with omegaconf; every key and value is checked against ``schema.py`` and returns
a ``Config``. Nothing here touches a model, so a broken config fails in milliseconds, before
anything heavy loads. Every error names the key, the bad value and what is allowed.

A relative ``prompts.path`` (or ``train.eval.path``) written inside a YAML file resolves against
that file's folder (so presets ship their prompt files next to them); when no such file is there,
against the presets' folder, so a preset copied elsewhere keeps its shipped prompt lists. Given
as an override, it resolves against the current directory. Output folders (``train.output_dir``,
``render.output_dir``) are always relative to the current directory.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from rlr_video.config.coerce import build
from rlr_video.config.schema import Config
from rlr_video.config.validate import validate
from rlr_video.errors import ConfigError, ConfigFileError, UnknownConfigError

# Where presets live (package data, so a wheel ships them): ``rlr-video train tiny-shapes``
# means ``rlr_video/configs/tiny-shapes.yaml``.
PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_PRESET = "tiny-shapes"


def resolve_config_path(name_or_path: str | None) -> Path:
    """A YAML path, or a preset name from ``rlr_video/configs/`` (``None``: the CPU default)."""
    if name_or_path is None:
        name_or_path = DEFAULT_PRESET
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(Path(name_or_path).stem, presets, n=1)
    raise UnknownConfigError(str(name_or_path), presets, close[0] if close else None)


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a preset or YAML file, apply ``key=value`` overrides, validate, return a ``Config``."""
    path = resolve_config_path(None if name_or_path is None else str(name_or_path))
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError("<root>", raw, f"a mapping of sections in {path}")
    _resolve_paths(raw, path.parent)
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    return from_dict(raw)


def _read_yaml(path: Path) -> Any:
    """The file's contents with ``${...}`` interpolations resolved; a syntax error or an
    unresolvable interpolation raises a one-line ``ConfigFileError``, not a parser traceback."""
    import yaml
    from omegaconf import OmegaConf  # only config loading needs it
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    except yaml.YAMLError as err:
        raise yaml_error(path, err) from None
    except OmegaConfBaseException as err:  # an interpolation that does not resolve
        key = str(err.full_key) if getattr(err, "full_key", None) else None
        reason = str(err).splitlines()[0]
        raise ConfigFileError(path, _key_line(path, key) if key else None, key, reason) from None


def yaml_error(path: Path, err: Exception) -> ConfigFileError:
    """A ``yaml.YAMLError`` in ``path`` as one line: the line where the broken construct (and
    so its key) starts, and that line's text."""
    mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)
    if mark is None:
        return ConfigFileError(path, None, None, f"invalid YAML: {err}")
    text = path.read_text(encoding="utf-8").splitlines()[mark.line].strip()
    reason = ", ".join(r for r in (err.context, err.problem) if r)
    return ConfigFileError(path, mark.line + 1, None, f"invalid YAML near {text!r}: {reason}")


def _key_line(path: Path, key: str) -> int | None:
    """The line of dotted ``key`` in a YAML file that parses (None if it is not found)."""
    import yaml

    node, line = yaml.compose(path.read_text(encoding="utf-8")), None
    for part in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if k.value == part), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a ``Config`` from plain nested dicts."""
    config = build(Config, raw, "")
    validate(config)
    return config


def _parse_override(item: str) -> tuple[str, Any]:
    from omegaconf import OmegaConf

    if "=" not in item or item.startswith("="):
        raise ConfigError(item, item, "overrides of the form key=value, e.g. estimator.h=3")
    key = item.split("=", 1)[0].strip()
    try:  # omegaconf's grammar: numbers, bools, null, [lists], {dicts}, quoted strings
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={item.split('=', 1)[1]}"]))
    except Exception as err:  # noqa: BLE001 - omegaconf raises several grammar errors
        raise ConfigError(key, item.split("=", 1)[1], f"a YAML value ({err})") from None
    return key, value["value"]


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), child, f"a section to set '{key}' inside")
        node = child
    node[parts[-1]] = value


# Keys holding file paths that resolve against the YAML file's folder.
_PATH_KEYS = (("prompts", "path"), ("train", "eval", "path"))


def _resolve_paths(raw: dict, base: Path) -> None:
    """Relative paths against the YAML file's folder, else the presets' (a copied preset)."""
    for *sections, key in _PATH_KEYS:
        sub = raw
        for section in sections:
            sub = sub.get(section) if isinstance(sub, dict) else None
        if isinstance(sub, dict) and isinstance(sub.get(key), str) and not Path(sub[key]).is_absolute():
            path = base / sub[key]
            if not path.exists() and (PRESET_DIR / sub[key]).is_file():
                path = PRESET_DIR / sub[key]
            sub[key] = str(path.resolve())
