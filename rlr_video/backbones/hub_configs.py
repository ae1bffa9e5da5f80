"""The shipped presets' hub models as config files only, so ``rlr-video plan`` runs offline.

``rlr-video plan`` builds a model on the meta device from its config files and reads no weights
(``rlr_video.memory.meta``). For the hub ids the shipped presets name, those few files ship
with the package under ``assets/hub-configs/<owner>--<name>/`` (their README names where each
value comes from). Inside ``configs_only()`` (which the meta loader enters) a hub id missing from
the Hugging Face cache resolves to that folder; a cache hit still wins, and every other hub id,
and any load outside a plan, goes through the cache as before. No vocabulary ships: a plan only
needs a tokenizer's ``model_max_length``, which ``LengthOnlyTokenizer`` carries.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "hub-configs"

_configs_only: ContextVar[bool] = ContextVar("configs_only", default=False)


def shipped_folder(repo_id: str) -> Path | None:
    """The shipped config folder of ``repo_id`` ("owner/name"), or None."""
    folder = SHIPPED_DIR / repo_id.replace("/", "--")
    return folder if "/" in repo_id and folder.is_dir() else None


def shipped_repos() -> list[str]:
    """The hub ids whose configs ship with the package."""
    return sorted(p.name.replace("--", "/", 1) for p in SHIPPED_DIR.iterdir() if p.is_dir())


@contextlib.contextmanager
def configs_only() -> Iterator[None]:
    """Inside, ``fallback`` offers the shipped configs of a hub id the cache does not hold."""
    token = _configs_only.set(True)
    try:
        yield
    finally:
        _configs_only.reset(token)


def fallback(repo_id: str) -> Path | None:
    """The shipped configs of ``repo_id`` when only configs are needed (inside ``configs_only``)."""
    return shipped_folder(repo_id) if _configs_only.get() else None


def is_shipped(path: Path) -> bool:
    """Whether ``path`` lies inside a shipped config folder."""
    return Path(path).resolve().is_relative_to(SHIPPED_DIR)


class LengthOnlyTokenizer:
    """A tokenizer without a vocabulary: what a memory plan reads of one (its length)."""

    def __init__(self, folder: Path):
        config = json.loads((folder / "tokenizer_config.json").read_text())
        self.folder = folder
        self.model_max_length = config.get("model_max_length")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"{self.folder} ships no vocabulary (configs for `rlr-video plan` only); "
            "download the model to encode prompts"
        )
