"""``flicker``: VBench temporal flickering on pixels, 1 − mean |x_i − x_{i−1}|.

Reference: Vchitect/VBench ``vbench/temporal_flickering.py`` (``cal_score``): the mean absolute
difference of every pair of consecutive frames, over every pixel and channel, averaged over the
pairs, as (255 − MAE) / 255 on 8-bit frames; here the same on frames in [0, 1]. A set of videos
is summarised by the plain mean of their scores (VBench's ``np.mean``), and VBench reads every
frame of a video, so neighbours must stay neighbours (``frame_sampling = "all"``: keeping every
k-th frame would measure other pairs). VBench applies it to static-camera videos only (its
``static_filter``); that selection is the caller's. A one-frame video scores 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rewards.frames import check_frames
from rewards.registry import register_reward
from rewards.temporal import one_per_video, pair_terms


@register_reward("flicker", needs_prompts=False)
class FlickerReward:
    """1 − mean absolute difference of consecutive frames; ``sample_frames`` draws that many
    pairs uniformly (unbiased), ``chunk_size`` bounds the pairs differenced at once."""

    name = "flicker"
    differentiable = True
    needs_prompts = False
    frame_sampling = "all"

    def __init__(
        self,
        chunk_size: int | None = None,
        sample_frames: int | None = None,
    ) -> None:
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"flicker: chunk_size must be positive, got {chunk_size}")
        self.chunk_size = chunk_size
        self.sample_frames = sample_frames

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        check_frames(frames, None, self.name)
        if frames.shape[1] == 1:
            return one_per_video(frames)
        terms = pair_terms(frames.shape[1], self.sample_frames).to(frames.device)
        step = self.chunk_size or len(terms)
        diffs = [self._mean_abs_diff(frames, chunk) for chunk in terms.split(step)]
        return 1.0 - torch.cat(diffs, dim=1).mean(dim=1)

    @staticmethod
    def _mean_abs_diff(frames: Tensor, terms: Tensor) -> Tensor:
        """(B, len(terms)): mean |x_i - x_{i-1}| for each i in ``terms``."""
        first, last = int(terms[0]), int(terms[-1])
        if last - first + 1 == len(terms):  # consecutive: slices are views, a gather would copy
            current, previous = frames[:, first : last + 1], frames[:, first - 1 : last]
        else:
            current, previous = frames[:, terms], frames[:, terms - 1]
        return (current - previous).abs().mean(dim=(2, 3, 4), dtype=torch.float32)

    @staticmethod
    def aggregate(scores: Sequence[float], frame_counts: Sequence[int]) -> float:
        """The score of a set of videos: VBench averages the per-video scores."""
        if len(scores) != len(frame_counts):
            raise ValueError(f"got {len(scores)} scores but {len(frame_counts)} frame counts")
        return sum(scores) / len(scores) if scores else float("nan")
