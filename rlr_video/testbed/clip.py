"""The shapes CLIP: a small open_clip video-text model trained on the testbed's data.

A video enters open_clip's standard image tower as a *contact sheet*: its frames tiled
row-major on a 2 x 4 grid (8 frames of 16 x 16 -> one 32 x 64 image). Averaging frame
embeddings over time (the usual image-CLIP-on-video recipe) cannot tell "moving left"
from "moving right", because a mean is blind to frame order; on a sheet, the ViT's
position embeddings say which frame is which, so motion direction is visible while
the model stays a plain open_clip ``CLIP`` that ``open_clip.create_model`` builds.

The shipped folder ``rlr_video/assets/shapes-clip/`` is an open_clip ``local-dir``:
``open_clip_config.json`` (model and preprocess config) and ``open_clip_model.safetensors``
(stored in float16 to keep the 49,408-row token table small; loaded as float32). It uses
open_clip's default BPE tokenizer, so both of these work with no rlr-video code::

    model = open_clip.create_model("local-dir:rlr_video/assets/shapes-clip")
    tokenizer = open_clip.get_tokenizer("local-dir:rlr_video/assets/shapes-clip")

:class:`ShapesClip` wraps them with the video -> sheet step.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from rlr_video.file_mode import follow_umask
from rlr_video.testbed.scorer import ATTRIBUTES, parse_prompt
from rlr_video.testbed.tiny_model import ASSETS_DIR, NUM_FRAMES, RESOLUTION
from rlr_video.testbed.word_swap import VALUES, retarget, swapped_prompts

SHAPES_CLIP_DIR = ASSETS_DIR / "shapes-clip"
MODEL_NAME = "shapes-clip"
GRID = (2, 4)  # rows, columns of the contact sheet; rows * columns = frames
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def model_config(resolution: int = RESOLUTION, width: int = 64) -> dict:
    """open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
    rows, cols = GRID
    return {
        "embed_dim": width,
        "vision_cfg": {
            "image_size": [rows * resolution, cols * resolution],
            "patch_size": 4,
            "width": width,
            "layers": 3,
            "head_width": 16,
            "mlp_ratio": 2.0,
        },
        "text_cfg": {
            "context_length": 16,  # longest caption: 14 tokens with start/end
            "vocab_size": 49408,  # open_clip's default BPE, so get_tokenizer just works
            "width": width,
            "heads": 4,
            "layers": 2,
            "mlp_ratio": 2.0,
        },
    }


def preprocess_config(resolution: int = RESOLUTION) -> dict:
    """open_clip preprocess config: the sheet size and normalisation."""
    rows, cols = GRID
    return {"size": [rows * resolution, cols * resolution], "mean": MEAN, "std": STD}


def register_config(cfg: dict | None = None, name: str = MODEL_NAME) -> str:
    """Register ``cfg`` with open_clip under ``name`` (run time, via its public API)."""
    import open_clip

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(cfg or model_config()))
        open_clip.add_model_config(path)
    return name


def frames_to_sheet(frames: Tensor, resolution: int = RESOLUTION) -> Tensor:
    """Frames (B, F, 3, H, W) in [0, 1] -> normalised sheets (B, 3, rows*H, cols*W).

    Videos with another frame count are resampled to the grid's frame count (nearest
    frame), and other sizes are resized bilinearly, so any testbed-like video fits.
    Differentiable in ``frames``.
    """
    b, f, c, h, w = frames.shape
    rows, cols = GRID
    n = rows * cols
    if f != n:
        idx = torch.linspace(0, f - 1, n, device=frames.device).round().long()
        frames = frames[:, idx]
    if (h, w) != (resolution, resolution):
        frames = F.interpolate(frames.flatten(0, 1), size=(resolution, resolution), mode="bilinear").unflatten(
            0, (b, n)
        )
    mean = torch.tensor(MEAN, device=frames.device, dtype=frames.dtype).view(1, 1, 3, 1, 1)
    std = torch.tensor(STD, device=frames.device, dtype=frames.dtype).view(1, 1, 3, 1, 1)
    x = (frames - mean) / std
    x = x.view(b, rows, cols, c, resolution, resolution).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, rows * resolution, cols * resolution)


class ShapesClip(torch.nn.Module):
    """open_clip ``CLIP`` + tokenizer, with videos encoded as contact sheets."""

    def __init__(self, model, tokenizer) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.model.parameters()).device

    def encode_video(self, frames: Tensor) -> Tensor:
        """Unit-norm embeddings (B, D) of videos (B, F, 3, H, W) in [0, 1]."""
        return F.normalize(self.model.encode_image(frames_to_sheet(frames)), dim=-1)

    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """Unit-norm embeddings (B, D) of prompts."""
        ids = self.tokenizer(list(prompts)).to(self.device)
        return F.normalize(self.model.encode_text(ids), dim=-1)

    def forward(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        """Cosine similarity (B,) between each video and its prompt (differentiable)."""
        return (self.encode_video(frames) * self.encode_text(prompts)).sum(-1)


class CaptionWordReward:
    """The shapes CLIP's probability of reading each attribute word of the caption right.

    For every attribute (colour, shape, direction) the caption competes with its copies in
    which that word is swapped for each other value (``word_swap.swapped_prompts``); the
    reward is the softmax probability, at the CLIP's own logit scale, of the true caption,
    averaged over the attributes. It lies in [0, 1] and rewards the words equally, so it
    asks for the direction as much as for the colour, unlike the plain cosine, on which a
    colour already earns most of the score. Differentiable in the video, so a pathwise
    estimator can backpropagate it; the CLIP itself is frozen.

    ``target`` (e.g. ``{"direction": "right"}``) rewards those words instead of the prompt's:
    each prompt is rewritten with them (``word_swap.retarget``) before it is read, and only
    the targeted attributes are scored unless ``attributes`` says otherwise. That is a
    reward the model does not already satisfy by following its prompts, on an attribute
    the chain decides early (``benchmarks/tiny_shapes_decision_time.json``).

    ``temperature`` divides the logits. At 1 a clearly wrong word has probability ~1e-6, so
    the reward is flat there and a pathwise gradient vanishes; a few (4) keep it alive.
    """

    name = "clip_words"
    differentiable = True
    needs_prompts = True

    def __init__(
        self,
        clip: ShapesClip,
        attributes: Sequence[str] | None = None,
        target: Mapping[str, str] | None = None,
        temperature: float = 1.0,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.target = dict(target or {})
        if self.target:
            retarget("a red circle moving left", self.target)  # checks the names and values now
        self.attributes = tuple(attributes or self.target or ATTRIBUTES)
        self.clip = clip.eval().requires_grad_(False)
        # The CLIP is frozen and the captions come from a small grammar: each caption's text
        # embedding is computed once, not at every call.
        self._text: dict[str, Tensor] = {}

    def _encode_text(self, captions: list[str]) -> Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self._text]
        if missing:
            with torch.no_grad():
                self._text.update(zip(missing, self.clip.encode_text(missing), strict=True))
        return torch.stack([self._text[c] for c in captions])

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        if self.target:
            prompts = [retarget(p, self.target) for p in prompts]
        video = self.clip.encode_video(frames.float())  # (B, D)
        scale = self.clip.model.logit_scale.exp() / self.temperature
        parsed = [parse_prompt(p) for p in prompts]
        per_attribute = []
        for attribute in self.attributes:
            variants = [v for p in prompts for v in swapped_prompts(p, attribute)]
            text = self._encode_text(variants).view(len(prompts), len(VALUES[attribute]), -1)
            logits = scale * torch.einsum("bd,bvd->bv", video, text)
            truth = torch.tensor([VALUES[attribute].index(getattr(p, attribute)) for p in parsed])
            per_attribute.append(logits.softmax(-1).gather(1, truth.to(logits.device)[:, None])[:, 0])
        return torch.stack(per_attribute).mean(0)


def load_shapes_clip(path: str | Path | None = None, device: str = "cpu") -> ShapesClip:
    """Load a saved shapes CLIP folder through open_clip's own ``local-dir`` loader."""
    import open_clip

    folder = Path(path or SHAPES_CLIP_DIR)
    model = open_clip.create_model(f"local-dir:{folder}", device=device)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    return ShapesClip(model, tokenizer)


def video_clip_folder(model: str) -> Path | None:
    """The folder of the frame-grid video CLIP that ``model`` names, or ``None``.

    ``"shapes-clip"`` is the shipped one; ``"local-dir:PATH"`` (or a bare folder path) counts
    when its ``open_clip_config.json`` carries ``rlr_video.video_grid`` (written by
    :func:`save_shapes_clip`). Anything else is an image CLIP name for open_clip.
    """
    if model == MODEL_NAME:
        return SHAPES_CLIP_DIR
    folder = Path(model.removeprefix("local-dir:")).expanduser()
    config = folder / "open_clip_config.json"
    if not config.is_file():
        return None
    try:
        extra = json.loads(config.read_text()).get("rlr_video", {})
    except json.JSONDecodeError as err:
        raise ValueError(f"{config}: not valid JSON ({err})") from err
    if "video_grid" not in extra:
        return None
    if list(extra["video_grid"]) != list(GRID):
        raise ValueError(f"{config}: video_grid {extra['video_grid']} is not supported (expected {list(GRID)})")
    return folder


def save_shapes_clip(model, folder: str | Path, extra: dict | None = None) -> Path:
    """Save ``model`` as an open_clip ``local-dir`` folder (float16 safetensors).

    ``open_clip_config.json`` gets an ``rlr_video`` section with ``video_grid`` (which marks
    the folder as a video CLIP for the ``clip`` reward) and ``extra`` (training facts).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    follow_umask(folder / "open_clip_model.safetensors")  # safetensors writes 0600
    cfg = {"model_cfg": model_config(), "preprocess_cfg": preprocess_config()}
    cfg["rlr_video"] = {"video_grid": list(GRID), **(extra or {})}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return folder


__all__ = [
    "CaptionWordReward",
    "GRID",
    "MODEL_NAME",
    "NUM_FRAMES",
    "SHAPES_CLIP_DIR",
    "ShapesClip",
    "frames_to_sheet",
    "load_shapes_clip",
    "model_config",
    "register_config",
    "save_shapes_clip",
    "video_clip_folder",
]
