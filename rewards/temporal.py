"""``temporal``: temporal consistency from per-frame features, as VBench's subject/background
consistency computes it.

With unit features f_i (DINO CLS tokens, or CLIP image embeddings), the score is the mean over
frames i > 0 of ½[cos(f_{i−1}, f_i) + cos(f_0, f_i)]: each frame is compared with the previous
one and with the first. (VBench also clamps each cosine at 0; that only matters for unrelated
frames and would cut gradients, so it is left out.) A one-frame video scores 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rewards.encoders import HFImageEncoder, OpenClipEncoder
from rewards.frames import check_frames, encode_frames, sample_indices
from rewards.registry import register_reward

DEFAULT_MODELS = {"dino": "facebook/dino-vitb16", "clip": "ViT-B-32"}


def pair_terms(count: int, keep: int | None) -> Tensor:
    """The frames i > 0 whose terms enter the mean: all, or ``keep`` drawn uniformly (unbiased)."""
    picked = sample_indices(count - 1, keep)
    return torch.arange(1, count) if picked is None else picked + 1


def one_per_video(frames: Tensor) -> Tensor:
    """A score of 1 per video that stays attached to the graph (zero gradient, not none)."""
    return frames.sum(dim=(1, 2, 3, 4)) * 0 + 1


@register_reward("temporal", needs_prompts=False)
class TemporalConsistencyReward:
    """VBench-style consistency; ``backbone`` is ``"dino"`` (a transformers model id or folder)
    or ``"clip"`` (an open_clip model name with ``pretrained``)."""

    name = "temporal"
    differentiable = True
    needs_prompts = False

    def __init__(
        self,
        backbone: str = "dino",
        model: str | None = None,
        pretrained: str | None = "openai",
        dtype: str | None = None,
        chunk_size: int | None = 16,
        sample_frames: int | None = None,
        checkpoint: bool = False,
    ) -> None:
        if backbone not in DEFAULT_MODELS:
            raise ValueError(f"temporal: backbone must be 'dino' or 'clip', got {backbone!r}")
        model = model or DEFAULT_MODELS[backbone]
        if backbone == "dino":
            self.encoder: HFImageEncoder | OpenClipEncoder = HFImageEncoder(model, dtype)
        else:
            self.encoder = OpenClipEncoder(model, pretrained, dtype=dtype)
        self.chunk_size = chunk_size
        self.sample_frames = sample_frames
        self.checkpoint = checkpoint

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        check_frames(frames, None, self.name)
        count = frames.shape[1]
        if count == 1:
            return one_per_video(frames)
        terms = pair_terms(count, self.sample_frames)
        # Encode each needed frame once: the first, and both ends of every sampled pair.
        needed = torch.unique(torch.cat([torch.zeros(1, dtype=torch.long), terms - 1, terms]))
        where = torch.full((count,), -1, dtype=torch.long)
        where[needed] = torch.arange(len(needed))
        # Every frame needed (no subsampling): no gather, whose copy and backward cost time.
        chosen = frames if len(needed) == count else frames[:, needed.to(frames.device)]
        features = encode_frames(self.encoder.encode_images, chosen, self.chunk_size, self.checkpoint)  # (B, n, D)
        device = features.device
        current = features[:, where[terms].to(device)]
        previous = features[:, where[terms - 1].to(device)]
        first = features[:, :1]  # frame 0 is always needed[0]
        sims = 0.5 * ((previous * current).sum(-1) + (first * current).sum(-1))
        return sims.mean(dim=1)
