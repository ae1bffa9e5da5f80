"""Seeds derived from a run seed and keys: the same in every process and every Python run.

A leaf module: training streams, render and evaluation sets all draw from it, so a (seed, key)
pair names the same randomness wherever it is used.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from the run seed and keys, stable across processes and Python runs."""
    digest = hashlib.sha256("/".join(map(str, (seed, *keys))).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
