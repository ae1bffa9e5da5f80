"""Memory budgets: ``24GiB``, ``40GB``, ``512MiB``, a byte count, or ``auto`` (fit this GPU).

Parsing a size needs no torch, so config validation stays light; ``auto`` asks the device.
"""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
AUTO = ("auto", "gpu", "fit", "device")
FORMAT = "bytes or a size like 24GiB, 40GB, 512MiB, or 'auto' (the free memory of this GPU)"


def parse_size(value) -> int | None:
    """Bytes of a size, or None for ``auto``; ``ValueError`` for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"memory budget {value!r} must be positive")
        return int(value)
    text = str(value).strip().lower().replace(" ", "")
    if text in AUTO:
        return None
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([a-z]*)", text)
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"memory budget {value!r}: expected {FORMAT}")
    size = float(match.group(1)) * _UNITS[match.group(2)]
    if size <= 0:
        raise ValueError(f"memory budget {value!r} must be positive")
    return int(size)


def parse_budget(value, device=None, margin: float = 0.9) -> int:
    """Bytes for ``value``; ``auto`` is ``margin`` x the free memory of the GPU (``device``, or
    the current one), or of the machine's RAM where there is no GPU."""
    if value is None:
        raise ValueError("no memory budget given")
    size = parse_size(value)
    if size is not None:
        return size
    import torch

    dev = torch.device(device) if device is not None else None
    if (dev is None or dev.type == "cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free * margin)
    import psutil

    return int(psutil.virtual_memory().available * margin)
