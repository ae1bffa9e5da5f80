"""Causal 3D VAE decoding (Wan, CogVideoX) checkpointed a few latent frames at a time.

These decoders run the clip through the decoder one latent-frame group at a time, carrying a
cache of each causal convolution's last input frames from one group to the next (Wan: one
latent frame per call and a list ``feat_cache``; CogVideoX: two per call and a ``conv_cache``
dict). With gradients, a plain ``vae.decode`` keeps every group's activations for the
backward pass (307 GiB for two 33-frame 480x832 Wan 2.1 clips in bfloat16), and
checkpointing it whole recomputes them all at once in the backward pass, which peaks as high.

``decode_causal(vae, z, chunk, steps)`` runs the same loop (the family's ``decode_steps``) on
each video with ``chunk`` groups per checkpoint: the caches passed between checkpoints are the
only activations kept, and the backward pass recomputes one video's ``chunk`` groups at a time.
The frames equal
``vae.decode``'s one video at a time (diffusers' slicing) bitwise, the same modules on the
same slices in the same order, and so do the gradients (``tests/test_causal_vae.py``). The
families' loops mirror diffusers 0.42's ``AutoencoderKLWan._decode`` and
``AutoencoderKLCogVideoX._decode``, HunyuanVideo's temporal tiles
(``AutoencoderKLHunyuanVideo._temporal_tiled_decode``: the cache is the previous tile's blended
end) and HunyuanVideo 1.5's spatial tiles (``AutoencoderKLHunyuanVideo15.tiled_decode``: one
tile per step, blended when all are decoded); the other families' spatially tiled decoding is
left to diffusers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves
from torch.utils.checkpoint import checkpoint

from rlr_video.backbones.family import family_of
from rlr_video.backbones.vae import to_unit_range


@dataclass
class CausalSteps:
    """A causal decoder's loop: ``pieces`` of latents, decoded in order by ``step(piece, cache,
    first) -> (frames, cache)``, then ``finish`` on the frames concatenated over time."""

    pieces: list[Tensor]
    step: Callable[[Tensor, Any, bool], tuple[Tensor, Any]]
    finish: Callable[[Tensor], Tensor]
    cache: Any = None
    # Each step's share of the decoder's work where it is not its share of the output frames
    # (a loop over spatial tiles: each step outputs one tile's frames, of any size); None:
    # in proportion to the frames each step outputs.
    shares: list[float] | None = None


StepsFn = Callable[[nn.Module, Tensor], CausalSteps]  # a family's decoding loop: (vae, z) -> CausalSteps


class CausalDecoding:
    """``decode`` for a backbone with a causal 3D VAE: ``vae_input`` (the family's latents as
    the VAE takes them), then ``decode_causal`` with the family's ``decode_steps``."""

    vae: nn.Module
    # Decoder steps per checkpoint while gradients are recorded; None: one plain ``vae.decode``.
    # The memory options set it (``rlr_video.memory.recompute``).
    decode_checkpoint_chunk: int | None = None

    def vae_input(self, latents: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def decode_steps(self) -> StepsFn | None:
        """The family's decoding loop; None when the decode cannot be checkpointed per step
        (no loop declared, or the VAE is tiled: diffusers' tiled decode is left whole)."""
        if getattr(self.vae, "use_tiling", False):
            return None
        return family_of(self).decode_steps

    def decode(self, latents: Tensor) -> Tensor:
        """Frames (B, F, 3, H, W) in [0, 1]; differentiable."""
        video = decode_causal(self.vae, self.vae_input(latents), self.decode_checkpoint_chunk, self.decode_steps)
        return to_unit_range(video.permute(0, 2, 1, 3, 4))


def _run(step: Callable, pieces: list[Tensor], cache: Any, first: bool) -> tuple[Tensor, Any]:
    frames = []
    for i, piece in enumerate(pieces):
        out, cache = step(piece, cache, first and i == 0)
        frames.append(out)
    return torch.cat(frames, dim=2), cache


def decode_causal(vae: nn.Module, z: Tensor, chunk: int | None = None, steps: StepsFn | None = None) -> Tensor:
    """``vae.decode(z)``'s frames (B, 3, F, H, W) in [-1, 1]. While gradients are recorded and
    ``chunk`` and the decoding loop ``steps`` are given, each video is decoded on its own, ``chunk``
    decoder steps (latent-frame groups) per checkpoint: the backward pass recomputes one video's
    ``chunk`` steps at a time."""
    if chunk is None or steps is None or not torch.is_grad_enabled():
        return vae.decode(z, return_dict=False)[0]
    return torch.cat([_decode_checkpointed(steps(vae, video), chunk) for video in z.split(1)])


def _decode_checkpointed(steps: CausalSteps, chunk: int) -> Tensor:
    frames, cache = [], steps.cache
    for start in range(0, len(steps.pieces), chunk):
        pieces = steps.pieces[start : start + chunk]
        out, cache = checkpoint(_run, steps.step, pieces, cache, start == 0, use_reentrant=False)
        frames.append(out)
    return steps.finish(torch.cat(frames, dim=2))


@dataclass
class DecodeProfile:
    """What checkpointing each step of a causal decode keeps, per video (``decode_profile``)."""

    carried: int  # bytes of the largest cache one step hands to the next
    largest_step: int  # the most frames one step outputs
    frames: int  # frames the steps output, all together
    steps: int  # decoder steps (checkpoints) per video
    share: float = 1.0  # the largest step's share of one video's decoder work


def decode_profile(vae: nn.Module, z: Tensor, steps_fn: StepsFn) -> DecodeProfile:
    """Run the decoding loop ``steps_fn`` on one video of ``z`` without gradients and measure it;
    on the meta device this costs a model without its weights and computes nothing."""
    carried, largest, frames = 0, 0, 0
    with torch.no_grad():
        steps = steps_fn(vae, z[:1])
        cache = steps.cache
        for i, piece in enumerate(steps.pieces):
            out, cache = steps.step(piece, cache, i == 0)
            cached = [t for t in tree_leaves(cache) if isinstance(t, Tensor)]
            carried = max(carried, sum(t.numel() * t.element_size() for t in cached))
            largest, frames = max(largest, out.shape[2]), frames + out.shape[2]
    share = max(steps.shares) / sum(steps.shares) if steps.shares else largest / max(frames, 1)
    return DecodeProfile(carried, largest, frames, len(steps.pieces), share)
