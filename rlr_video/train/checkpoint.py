"""Checkpoints written atomically, kept to the last K, found again for ``--resume``.

Layout of ``<output_dir>/checkpoints/step-000050/``:

    lora/        the trained weights (LoRA safetensors, or the toy's trainable parameters)
    state.pt     the resume state: step, prompt position, optimizer, baseline, RNG states
    config.yaml  the resolved config of the run

A checkpoint is assembled in a hidden temporary folder, every file flushed to disk, and then
renamed into place: a rename is atomic, so a crash at any moment leaves either no new
checkpoint or a complete one, and the previous checkpoints untouched. Old checkpoints are
renamed away before they are deleted for the same reason.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.pt"
WEIGHTS_DIR = "lora"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders are never listed)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    state: dict[str, Any],
    write_weights: Callable[[Path], None],
    config_yaml: str,
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep_last``."""
    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    tmp.mkdir()
    write_weights(tmp / WEIGHTS_DIR)
    torch.save(state, tmp / STATE_FILE)
    (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
    _fsync_tree(tmp)
    if final.exists():  # the same step saved again (a resumed run): retire the old one first
        _retire(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(output_dir)[:-keep_last]:
        _retire(old)
    return final


def _retire(path: Path) -> None:
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.rename(path, trash)  # atomic: the checkpoint disappears from listings all at once
    shutil.rmtree(trash)


def _remove_leftovers(root: Path) -> None:
    """Temporary and half-deleted folders of a process that died while writing."""
    for p in root.iterdir():
        if p.name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(p, ignore_errors=True)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: the message names the file."""


def _state_classes() -> list[Any]:
    """What a resume state may hold besides tensors and containers: numpy's RNG state (as torch's
    docs allow it). Estimators keep their state as tensors and plain values (``state_dict``)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct]


def load_pickled(source: str | Path | io.BytesIO, where: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with only :func:`_state_classes` allowed besides
    tensors: a checkpoint from elsewhere cannot run code. Errors name ``where``."""
    try:
        with torch.serialization.safe_globals(_state_classes()):
            return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt, truncated or foreign files
        # torch's refusal is a page of advice (including weights_only=False); keep its reason
        refused = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", str(err))
        reason = refused.group(1) if refused else str(err).splitlines()[0]
        raise CheckpointError(f"{where}: not a resume state this version can read ({reason})") from None


def load_state(checkpoint: str | Path) -> dict[str, Any]:
    """The resume state of a checkpoint folder."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint (no {STATE_FILE})")
    return load_pickled(path, path)


def weights_dir(checkpoint: str | Path) -> Path:
    """The weights folder of a checkpoint; a bare weights folder is returned as is."""
    checkpoint = Path(checkpoint)
    return checkpoint / WEIGHTS_DIR if (checkpoint / WEIGHTS_DIR).is_dir() else checkpoint
