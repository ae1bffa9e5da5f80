"""Give files that a library wrote with a fixed mode the mode the process umask gives every other file.

safetensors >= 0.8 writes through a temporary file created with mode 0600 and renames it into
place (safetensors/safetensors#782), so its files (our LoRA weights, and those diffusers writes
with it) would be readable by their owner only, while every other output (config.yaml,
metrics.jsonl, videos) is 0644 under the usual umask 022.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_umask() -> int:
    """The process umask (reading it means setting it: set a strict one and put it back)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> Path:
    """chmod ``path`` to what ``open(path, "w")`` gives a new file: 0666 less the umask."""
    path = Path(path)
    os.chmod(path, 0o666 & ~process_umask())
    return path
