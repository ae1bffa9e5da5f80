"""The shape most rewards share: score each frame, average over frames.

Subclasses provide ``encode_images`` (images → features, differentiable) and ``score`` (features
→ per-frame scores). The base class checks inputs, subsamples frames, encodes them in chunks
(optionally checkpointed) and averages.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from rewards.frames import check_frames, encode_frames, sample_indices


class FrameMeanReward:
    """Mean over frames of a per-frame score; (B, F, 3, H, W) in [0, 1] → (B,).

    Common options:
      - ``chunk_size``: images per encoder call (memory bound; the result does not change);
      - ``sample_frames``: score this many frames drawn uniformly at random per call (an unbiased
        estimate of the all-frame mean; ``None`` scores all; torch's global RNG draws them);
      - ``checkpoint``: recompute each chunk's activations in the backward pass.
    """

    name = "frame_mean"
    differentiable = True
    needs_prompts = False

    def __init__(
        self,
        chunk_size: int | None = 16,
        sample_frames: int | None = None,
        checkpoint: bool = False,
    ) -> None:
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError(f"{self.name}: chunk_size must be positive, got {chunk_size}")
        if sample_frames is not None and sample_frames <= 0:
            raise ValueError(f"{self.name}: sample_frames must be positive, got {sample_frames}")
        self.chunk_size = chunk_size
        self.sample_frames = sample_frames
        self.checkpoint = checkpoint

    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] → (N, D)."""
        raise NotImplementedError

    def score(self, features: Tensor, prompts: Sequence[str]) -> Tensor:
        """(B, F, D) features and B prompts → (B, F) per-frame scores."""
        raise NotImplementedError

    def frame_scores(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        """(B, F') per-frame scores of the (possibly subsampled) frames."""
        check_frames(frames, prompts if self.needs_prompts else None, self.name)
        keep = sample_indices(frames.shape[1], self.sample_frames)
        if keep is not None:
            frames = frames[:, keep.to(frames.device)]
        features = encode_frames(self.encode_images, frames, self.chunk_size, self.checkpoint)
        return self.score(features, prompts)

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        return self.frame_scores(frames, prompts).mean(dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
