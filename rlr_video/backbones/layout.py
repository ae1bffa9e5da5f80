"""Where a backbone's weights are and what they are: paths, hub ids, diffusers layouts.

A diffusers layout is a directory with ``model_index.json`` (the pipeline's class and its
components as ``[library, class]``) and one sub-folder per component, as
``DiffusionPipeline.save_pretrained`` writes it and as hub repositories hold it. Every
failure here names the path and what was expected, because "file not found" deep inside
``from_pretrained`` tells a user nothing about which of four families was assumed.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from rlr_video.verbosity import loading_bars_hidden

# Packaged backbones: names that resolve to directories shipped inside rlr_video/assets.
PACKAGED = {"tiny-shapes": "tiny-shapes", "tiny-shapes-wan": "tiny-shapes-wan"}
# How a packaged model was trained and evaluated, where that differs from its pipeline's
# defaults (TextToVideoSDPipeline's 16 frames and guidance 9): options left unset take these.
# tiny-shapes samples best without classifier-free guidance (at 1.5 and 2 its held-out scores
# fall, benchmarks/tiny_shapes_eval*.json); 1 turns the unconditional branch off.
# tiny-shapes-wan: WanPipeline's 480 x 832 x 81 would not fit its 32 x 32 x 9 training videos, and its
# text encoder has 16 positions (rlr_video.testbed.tiny_wan), not UMT5's 512.
PACKAGED_DEFAULTS = {
    "tiny-shapes": {"num_frames": 8, "guidance_scale": 1.0},
    "tiny-shapes-wan": {
        "num_frames": 9,
        "height": 32,
        "width": 32,
        "guidance_scale": 1.0,
        "max_sequence_length": 16,
    },
}


def packaged_defaults(root: Path) -> dict[str, Any]:
    """``PACKAGED_DEFAULTS`` of the packaged model at ``root`` (by name or by its folder)."""
    for name, folder in PACKAGED.items():
        if root.resolve() == (assets_dir() / folder).resolve():
            return PACKAGED_DEFAULTS.get(name, {})
    return {}


# Raw checkpoints some hub repositories carry next to the diffusers folders; never needed.
_HUB_IGNORE = ["*.ckpt", "*.pth", "*.pt", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.gguf"]


class BackboneLoadError(ValueError):
    """A path or hub id that cannot be loaded as a video backbone; the message says which
    path and what was expected there."""


def assets_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "assets"


def resolve_source(path_or_hub_id: str | Path) -> Path:
    """A local directory for ``path_or_hub_id``: an existing directory, a packaged name
    (``"tiny-shapes"``), or a hub id ("owner/name") from the local cache or the hub."""
    text = str(path_or_hub_id)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise BackboneLoadError(f"{text} is a file; expected a diffusers pipeline directory (with model_index.json)")
    if text in PACKAGED:
        packaged = assets_dir() / PACKAGED[text]
        if not packaged.is_dir():
            raise BackboneLoadError(
                f"the packaged backbone {text!r} is not installed: expected the directory {packaged} "
                "(built by the testbed tools; see docs/testbed.md)"
            )
        return packaged
    if not looks_like_hub_id(text):
        raise BackboneLoadError(
            f"{text}: no such directory, and not a hub id of the form 'owner/name' or a packaged "
            f"backbone ({sorted(PACKAGED)})"
        )
    return _download(text)


def looks_like_hub_id(text: str) -> bool:
    if text.startswith(("/", ".", "~")) or text.count("/") != 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    from rlr_video.backbones import hub_configs

    try:
        return Path(snapshot_download(repo_id, ignore_patterns=_HUB_IGNORE))
    except Exception as err:  # offline, not cached, gated, missing: one clear message
        shipped = hub_configs.fallback(repo_id)  # a memory plan needs only the configs
        if shipped is not None:
            return shipped
        raise BackboneLoadError(
            f"{repo_id!r} is not a local folder and not in the Hugging Face cache ({hub_reason(err)}); "
            f"fetch it with `hf download {repo_id}` on a machine with network access"
        ) from err


def hub_reason(err: BaseException) -> str:
    """Why the hub could not give a repository, in a few words on one line (the hub's own
    messages are paragraphs, some with the connection error's text on a line of its own)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if isinstance(err, GatedRepoError):
        return "a gated repository: accept its terms on the hub, then `hf auth login`"
    if isinstance(err, RepositoryNotFoundError):
        return "no such repository on the hub, or a private one"
    if isinstance(err, LocalEntryNotFoundError):
        return "the hub cannot be reached"
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0].strip() if text else type(err).__name__


class Layout:
    """A diffusers pipeline directory: its ``model_index.json`` and component folders."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index_file = self.root / "model_index.json"
        self.index: dict[str, Any] = {}
        if index_file.is_file():
            try:
                self.index = json.loads(index_file.read_text())
            except json.JSONDecodeError as err:
                raise BackboneLoadError(f"{index_file} is not valid JSON: {err}") from err

    @property
    def pipeline_class(self) -> str | None:
        return self.index.get("_class_name")

    def entry(self, name: str) -> tuple[str, str] | None:
        """``(library, class)`` of a component per ``model_index.json``; None if absent or null."""
        value = self.index.get(name)
        if isinstance(value, list) and len(value) == 2 and value[0] and value[1]:
            return value[0], value[1]
        return None

    def declares_null(self, name: str) -> bool:
        """The index lists the component as ``[null, null]`` (saved as None, e.g. no VAE)."""
        value = self.index.get(name)
        return isinstance(value, list) and not any(value)

    def config(self, name: str) -> dict[str, Any] | None:
        """The component's ``config.json`` (models) or ``scheduler_config.json``."""
        for file in ("config.json", "scheduler_config.json"):
            path = self.root / name / file
            if path.is_file():
                return json.loads(path.read_text())
        return None

    def component_class(self, name: str) -> str | None:
        entry = self.entry(name)
        if entry:
            return entry[1]
        cfg = self.config(name)
        return cfg.get("_class_name") if cfg else None

    def has(self, name: str) -> bool:
        return (self.root / name).is_dir()

    def load(self, name: str, library: str, class_name: str, **kwargs) -> Any:
        """Load a component with the class ``model_index.json`` names (else the default given).

        Raises ``BackboneLoadError`` naming the folder when it is missing or unreadable.
        """
        folder = self.root / name
        if not folder.is_dir():
            listed = f" ({self.pipeline_class} lists it)" if self.entry(name) else ""
            raise BackboneLoadError(
                f"{self.root} is missing the component {name!r}{listed}: expected a folder {folder} "
                f"with a {class_name} as save_pretrained writes it"
            )
        library, class_name = self.entry(name) or (library, class_name)
        try:
            cls = getattr(importlib.import_module(library), class_name)
        except (ImportError, AttributeError) as err:
            raise BackboneLoadError(f"{folder}: unknown component class {library}.{class_name}") from err
        try:
            with loading_bars_hidden():
                return cls.from_pretrained(folder, **kwargs)
        except Exception as err:  # missing weights, bad config: say which component
            raise BackboneLoadError(
                f"cannot load the component {name!r} from {folder} as {class_name}: {type(err).__name__}: {err}"
            ) from err
