"""Frame handling shared by the rewards: input checks, frame subsampling, chunked encoding, and
which frames of a video file a reward should be given.

A reward says which frames its reference reads with ``frame_sampling`` (default ``"any"``):

- ``"any"``: a mean over frames (aesthetic, clip, hpsv2, pickscore): any evenly spaced subset
  estimates the same mean, so a caller may keep fewer frames;
- ``"all"``: every frame (VBench's flicker and consistency compare neighbouring frames; every
  k-th frame would measure other pairs);
- ``"own"``: every frame and the video's frame rate (videoalign samples by time itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as activation_checkpoint


def check_frames(frames: Tensor, prompts: Sequence[str] | None, name: str) -> None:
    """Raise a clear error unless ``frames`` is (B, F, 3, H, W) with one prompt per video."""
    if not isinstance(frames, Tensor) or frames.ndim != 5 or frames.shape[2] != 3:
        shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"reward {name!r}: expected frames of shape (B, F, 3, H, W), got {shape}")
    if frames.shape[1] == 0:
        raise ValueError(f"reward {name!r}: the videos have no frames")
    if prompts is not None and len(prompts) != frames.shape[0]:
        raise ValueError(f"reward {name!r}: got {frames.shape[0]} videos but {len(prompts)} prompts")


def sample_indices(count: int, keep: int | None, generator: torch.Generator | None = None) -> Tensor | None:
    """``keep`` of ``range(count)`` drawn uniformly without replacement, sorted; ``None`` for all.

    The mean of a per-item score over a uniform random subset is an unbiased estimate of the mean
    over all items, so frame-mean rewards stay unbiased (the estimator's R is then noisier, not
    shifted). The same subset is used for every video of a batch.
    """
    if keep is None or keep >= count:
        return None
    if keep <= 0:
        raise ValueError(f"sample_frames must be positive, got {keep}")
    return torch.randperm(count, generator=generator)[:keep].sort().values


def encode_in_chunks(
    encode: Callable[[Tensor], Tensor],
    images: Tensor,
    chunk_size: int | None,
    checkpoint: bool = False,
) -> Tensor:
    """``encode(images)`` computed ``chunk_size`` images at a time and concatenated.

    With ``checkpoint`` (and gradients on) each chunk's activations are recomputed in the
    backward pass instead of stored, so a reward's memory is one chunk's, whatever the frame count.
    """
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    chunks = [images] if chunk_size is None else list(images.split(chunk_size))
    outputs = []
    for chunk in chunks:
        if checkpoint and torch.is_grad_enabled() and chunk.requires_grad:
            outputs.append(activation_checkpoint(encode, chunk, use_reentrant=False))
        else:
            outputs.append(encode(chunk))
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


def encode_frames(
    encode: Callable[[Tensor], Tensor],
    frames: Tensor,
    chunk_size: int | None,
    checkpoint: bool = False,
) -> Tensor:
    """Per-frame features: (B, F, 3, H, W) → (B, F, D), encoding B·F images in chunks."""
    batch, count = frames.shape[:2]
    features = encode_in_chunks(encode, frames.flatten(0, 1), chunk_size, checkpoint)
    return features.reshape(batch, count, *features.shape[1:])


FRAME_SAMPLING = ("any", "all", "own")


def frame_sampling(reward: object) -> str:
    """A reward's ``frame_sampling`` rule; a weighted mixture takes its strictest term's."""
    terms = getattr(reward, "terms", None)
    if isinstance(terms, list | tuple) and terms:
        rules = {frame_sampling(term[1] if isinstance(term, tuple) else term) for term in terms}
        return "own" if "own" in rules else "all" if "all" in rules else "any"
    rule = getattr(reward, "frame_sampling", "any")
    if rule not in FRAME_SAMPLING:
        raise ValueError(f"reward {getattr(reward, 'name', reward)!r}: frame_sampling must be one of {FRAME_SAMPLING}")
    return rule


def select_frames(total: int, count: int | None, rule: str = "any") -> list[int]:
    """Indices of the frames of a ``total``-frame video to give a reward when a caller would keep
    ``count`` (``rlr-video reward --frames``): ``count`` evenly spaced ones, first and last
    included, for ``"any"``; every frame for ``"all"`` and ``"own"``, whatever ``count`` says."""
    if rule not in FRAME_SAMPLING:
        raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLING}, got {rule!r}")
    if count is not None and count <= 0:
        raise ValueError(f"the number of frames must be positive, got {count}")
    if rule != "any" or count is None or count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    step = (total - 1) / (count - 1)  # numpy.linspace's arithmetic, as rlr_video.video_io uses
    return [round(i * step) for i in range(count)]
