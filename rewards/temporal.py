"""``temporal``: VBench's subject consistency (DINO) and background consistency (CLIP).

References: Vchitect/VBench ``vbench/subject_consistency.py`` and
``vbench/background_consistency.py``, with the transforms of ``vbench/utils.py``.

With unit frame features f_i, a video scores the mean over frames i > 0 of
½[max(0, cos(f_{i−1}, f_i)) + max(0, cos(f_0, f_i))]: each frame against the previous one and
the first. A set of videos is summarised VBench's way, weighting each video by its F − 1 terms
(:meth:`TemporalConsistencyReward.aggregate`). VBench reads every frame of a video, so the score
is defined on all of them (``frame_sampling = "all"``); ``sample_frames`` (training) draws a
uniform subset of the terms instead, an unbiased estimate of the same mean.

- ``backbone="dino"`` (subject consistency): DINO ViT-B/16, see :mod:`rewards.dino` (short side
  to 224, bilinear without antialiasing, no crop, DINO's interpolated position embeddings).
- ``backbone="clip"`` (background consistency): OpenAI CLIP ViT-B/32 with VBench's
  ``clip_transform(224)``: short side to 224, bicubic without antialiasing, no clamp, centre crop
  224 (torchvision's, rounding), OpenAI mean and std. VBench loads it with OpenAI's ``clip``
  package, which runs in fp16 on a GPU (``dtype="fp16"`` to match that too).

``clamp=False`` drops the two ``max(0, ·)``: a training variant whose gradient does not vanish
for anticorrelated frames. A one-frame video scores 1 (VBench divides by zero there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rewards.dino import DinoEncoder, DinoSizes
from rewards.encoders import OpenClipEncoder
from rewards.frames import check_frames, encode_frames, sample_indices
from rewards.preprocess import ImagePreprocess
from rewards.registry import register_reward

DEFAULT_MODELS = {"dino": "facebook/dino-vitb16", "clip": "ViT-B-32"}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def vbench_clip_transform(model: torch.nn.Module) -> ImagePreprocess:
    """VBench's ``clip_transform(n_px)`` at the model's input size (224 for ViT-B/32)."""
    size = model.visual.image_size
    side = size if isinstance(size, int) else min(size)
    return ImagePreprocess(
        crop=(side, side),
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        resize=side,
        resize_mode="shortest",
        interpolation="bicubic",
        antialias=False,
        clamp=False,
    )


def pair_terms(count: int, keep: int | None) -> Tensor:
    """The frames i > 0 whose terms enter the mean: all, or ``keep`` drawn uniformly (unbiased)."""
    picked = sample_indices(count - 1, keep)
    return torch.arange(1, count) if picked is None else picked + 1


def one_per_video(frames: Tensor) -> Tensor:
    """A score of 1 per video that stays attached to the graph (zero gradient, not none)."""
    return frames.sum(dim=(1, 2, 3, 4)) * 0 + 1


def pair_weights(frame_counts: Sequence[int]) -> list[int]:
    """VBench's weight of each video in a set: its F − 1 pair terms."""
    return [max(0, int(count) - 1) for count in frame_counts]


def pair_weighted_mean(scores: Sequence[float], frame_counts: Sequence[int]) -> float:
    """VBench's summary over videos: each video weighted by its F − 1 pair terms (``sim / cnt``)."""
    if len(scores) != len(frame_counts):
        raise ValueError(f"got {len(scores)} scores but {len(frame_counts)} frame counts")
    weights = pair_weights(frame_counts)
    total = sum(weights)
    if total == 0:
        return sum(scores) / len(scores) if scores else float("nan")
    return sum(w * s for w, s in zip(weights, scores, strict=True)) / total


@register_reward("temporal", needs_prompts=False)
class TemporalConsistencyReward:
    """VBench subject (``backbone="dino"``, a DINO checkpoint or Hugging Face ViT) or background
    (``backbone="clip"``, an open_clip model with ``pretrained``) consistency."""

    name = "temporal"
    differentiable = True
    needs_prompts = False
    frame_sampling = "all"

    def __init__(
        self,
        backbone: str = "dino",
        model: str | None = None,
        pretrained: str | None = "openai",
        clamp: bool = True,
        quick_gelu: bool | None = None,
        dtype: str | None = None,
        chunk_size: int | None = 16,
        sample_frames: int | None = None,
        checkpoint: bool = False,
    ) -> None:
        if backbone not in DEFAULT_MODELS:
            raise ValueError(f"temporal: backbone must be 'dino' or 'clip', got {backbone!r}")
        model = model or DEFAULT_MODELS[backbone]
        if backbone == "dino":
            self.encoder: DinoEncoder | OpenClipEncoder = DinoEncoder(model, dtype)
        else:
            self.encoder = OpenClipEncoder(
                model,
                pretrained,
                preprocess=vbench_clip_transform,
                quick_gelu=quick_gelu,
                reference_quick_gelu=True,  # VBench's model is OpenAI's ViT-B/32
                dtype=dtype,
            )
        self.clamp = clamp
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
        to_previous, to_first = (previous * current).sum(-1), (first * current).sum(-1)
        if self.clamp:
            to_previous, to_first = to_previous.clamp(min=0), to_first.clamp(min=0)
        return (0.5 * (to_previous + to_first)).mean(dim=1)

    @classmethod
    def sizes(cls, backbone: str = "dino", chunk_size: int | None = 16, checkpoint: bool = False, **_) -> object | None:
        """A weight-free stand-in for the memory planner: DINO's sizes (its token count follows
        the frames' shape, see :class:`rewards.dino.DinoSizes`); None for CLIP, whose open_clip
        tower the planner reads from its config."""
        if backbone != "dino":
            return None
        stand_in = DinoSizes()
        stand_in.chunk_size, stand_in.checkpoint = chunk_size, checkpoint
        return stand_in

    @staticmethod
    def aggregate(scores: Sequence[float], frame_counts: Sequence[int]) -> float:
        """The score of a set of videos, VBench's way: weighted by F − 1 (see :func:`pair_weighted_mean`)."""
        return pair_weighted_mean(scores, frame_counts)

    @staticmethod
    def aggregate_weights(frame_counts: Sequence[int]) -> list[int]:
        """The weights :meth:`aggregate` gives the videos (for its confidence interval)."""
        return pair_weights(frame_counts)
