"""Plain YAML values to the schema's types, or a ``ConfigError`` naming the dotted key.

``build(Config, raw)`` walks the dataclasses of ``schema.py``: unknown keys get a "did you mean",
Literal values their choices, numbers their bounds (field metadata ``min`` / ``max``). The
``estimator`` section is built with the config class its ``name`` registers; keys that belong to
another registered estimator are left out, so a preset switched with ``estimator.name=...``
keeps working, while a key no estimator knows is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

from rlr_video.errors import ConfigError
from rlr_video.estimators.registry import DEFAULT_ESTIMATOR, EstimatorConfig, all_config_keys, config_class


def _estimator_section(value: dict[str, Any], key: str) -> tuple[type, dict[str, Any]]:
    name = value.get("name", DEFAULT_ESTIMATOR)
    cls = config_class(name, _join(key, "name")) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(_join(key, "name"), name, "the name of a registered estimator")
    own = {f.name for f in dataclasses.fields(cls)}
    others = all_config_keys() - own
    return cls, {k: v for k, v in value.items() if k not in others}


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]"
    if dataclasses.is_dataclass(tp):
        return f"a section with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return getattr(tp, "__name__", str(tp))


def build(tp: Any, value: Any, key: str) -> Any:
    """Coerce ``value`` to type ``tp`` or raise a ``ConfigError`` naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key or "<root>", value, type_name(tp))
        if tp is EstimatorConfig:
            tp, value = _estimator_section(value, key)
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        for name in value:
            if name not in names:
                close = difflib.get_close_matches(str(name), names, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(_join(key, name), value[name], f"only the keys {', '.join(names)}{hint}")
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = build(hints[f.name], value[f.name], _join(key, f.name))
                check_range(f, kwargs[f.name], _join(key, f.name))
        return tp(**kwargs)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(key, value, type_name(tp))
        errors = {}
        for arg in args:
            if arg is type(None):
                continue
            try:
                return build(arg, value, key)
            except ConfigError as err:
                errors[arg] = err
        sections = [arg for arg in errors if dataclasses.is_dataclass(arg)]
        if isinstance(value, dict) and len(sections) == 1:
            raise errors[sections[0]]  # a section given as a mapping: its own error names the key inside
        raise ConfigError(key, value, type_name(tp))
    if origin is Literal:
        choices = typing.get_args(tp)
        if value is False and "no" in choices:  # YAML 1.1 reads a bare `no` as false
            return "no"
        if value in choices and type(value) is type(choices[0]):
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(key, value, f"{', '.join(str(c) for c in choices)}{hint}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, value, type_name(tp))
        (item_tp,) = typing.get_args(tp)
        return [build(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, type_name(tp))
        key_tp, val_tp = typing.get_args(tp)
        return {build(key_tp, k, key): build(val_tp, v, _join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, "an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, value, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "a string")
    raise TypeError(f"unsupported schema type {tp!r} at {key}")  # a bug in this file


def check_range(f: dataclasses.Field, value: Any, key: str) -> None:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if value is None or not isinstance(value, int | float):
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = " and ".join(b for b in (lo is not None and f">= {lo}", hi is not None and f"<= {hi}") if b)
        raise ConfigError(key, value, f"numbers {bounds}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
