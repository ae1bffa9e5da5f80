"""Loading reward models: a process-wide cache, weight files from paths or the hub, clear errors.

Every reward model loads once per process (keyed by what defines it) and is shared, frozen and
in eval mode: rewards give gradients to the frames, never to their own weights.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from rlr_video.verbosity import loading_bars_hidden

T = TypeVar("T")

_CACHE: dict[Hashable, Any] = {}
_LOCK = threading.Lock()

HUB_PREFIX = "hf:"


class MissingWeightsError(FileNotFoundError):
    """Reward weights are not on this machine; the message names the file and how to provide it.

    ``items`` lists each missing file as ``(what, fetch)``, one short line each (``fetch`` is the
    command or option that provides it), so several can be reported together.
    """

    def __init__(self, message: str, items: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.items = list(items)

    @classmethod
    def joined(cls, errors: Sequence[MissingWeightsError]) -> MissingWeightsError:
        """One error for several: the messages in turn, every item."""
        return cls(" ".join(str(e) for e in errors), [item for e in errors for item in e.items])


def cached(key: Hashable, load: Callable[[], T]) -> T:
    """Return the object cached under ``key``, calling ``load()`` the first time."""
    with _LOCK:
        if key not in _CACHE:
            with loading_bars_hidden():  # transformers' "Loading weights" bar, unless verbose
                _CACHE[key] = load()
        return _CACHE[key]


def clear_cache() -> None:
    """Drop every cached reward model (frees their memory)."""
    with _LOCK:
        _CACHE.clear()


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode (no dropout) and no parameter gradients."""
    module.eval()
    module.requires_grad_(False)
    return module


def resolve_file(source: str | os.PathLike[str], what: str, how: str) -> Path:
    """A local file path, or ``hf:OWNER/REPO/FILE`` fetched through the Hugging Face cache.

    With ``HF_HUB_OFFLINE=1`` (or no network) only files already in the cache resolve.
    ``what`` names the weights and ``how`` says how to provide them, for the error message.
    """
    text = str(source)
    if text.startswith(HUB_PREFIX):
        parts = text[len(HUB_PREFIX) :].split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{what}: expected 'hf:OWNER/REPO/FILE', got {text!r}")
        repo_id, filename = "/".join(parts[:2]), parts[2]
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo_id, filename))
        except Exception as err:  # noqa: BLE001  (offline, missing repo, network: same advice)
            raise MissingWeightsError(
                f"{what}: {filename!r} from the Hugging Face repo {repo_id!r} is not available "
                f"offline ({type(err).__name__}). {how}",
                [(what, f"hf download {repo_id} {filename}")],
            ) from err
    path = Path(text).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"{what}: file {str(path)!r} not found. {how}", [(what, f"no file {path}")])
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch pickle (tensors only), unwrapping ``state_dict``
    and a ``module.`` prefix (DataParallel checkpoints)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict (found {type(state).__name__})")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state
