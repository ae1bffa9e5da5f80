"""How saved weights differ from the model they are loaded into, in one short line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def describe_mismatch(model: Mapping[str, Sequence[int]], saved: Mapping[str, Sequence[int]], show: int = 3) -> str:
    """Counts of the model's keys missing from ``saved``, of unexpected keys and of keys with
    another shape, each with its first ``show`` keys; ``""`` when names and shapes all match.

    A LoRA of another model differs in thousands of keys: listing them all made a 20 KB error.
    """
    missing = sorted(set(model) - set(saved))
    unexpected = sorted(set(saved) - set(model))
    reshaped = sorted(k for k in set(model) & set(saved) if tuple(model[k]) != tuple(saved[k]))
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's {len(model)} keys missing (e.g. {_first(missing, show)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {_first(unexpected, show)})")
    if reshaped:
        shapes = ", ".join(f"{k} {tuple(saved[k])} vs {tuple(model[k])}" for k in reshaped[:show])
        parts.append(f"{len(reshaped)} keys with another shape than the model's (e.g. {shapes})")
    return "; ".join(parts)


def _first(keys: list[str], show: int) -> str:
    return ", ".join(keys[:show]) + (", ..." if len(keys) > show else "")
