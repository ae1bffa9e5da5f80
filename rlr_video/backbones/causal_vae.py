"""Causal 3D VAE decoding (Wan, CogVideoX) checkpointed a few latent frames at a time.

These decoders run the clip through the decoder one latent-frame group at a time, carrying a
cache of each causal convolution's last input frames from one group to the next (Wan: one
latent frame per call and a list ``feat_cache``; CogVideoX: two per call and a ``conv_cache``
dict). With gradients, a plain ``vae.decode`` keeps every group's activations for the
backward pass (307 GiB for two 33-frame 480x832 Wan 2.1 clips in bfloat16), and
checkpointing it whole recomputes them all at once in the backward pass, which peaks as high.

``decode_causal(vae, z, chunk)`` runs the same loop on each video with ``chunk`` groups per
checkpoint: the caches passed between checkpoints are the only activations kept, and the
backward pass recomputes one video's ``chunk`` groups at a time. The frames equal
``vae.decode``'s one video at a time (diffusers' slicing) bitwise, the same modules on the
same slices in the same order, and so do the gradients (``tests/test_causal_vae.py``). The
loops mirror diffusers 0.42's ``AutoencoderKLWan._decode`` and
``AutoencoderKLCogVideoX._decode``; tiled decoding is left to diffusers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves
from torch.utils.checkpoint import checkpoint

from rlr_video.backbones.vae import to_unit_range


@dataclass
class CausalSteps:
    """A causal decoder's loop: ``pieces`` of latents, decoded in order by ``step(piece, cache,
    first) -> (frames, cache)``, then ``finish`` on the frames concatenated over time."""

    pieces: list[Tensor]
    step: Callable[[Tensor, Any, bool], tuple[Tensor, Any]]
    finish: Callable[[Tensor], Tensor]
    cache: Any = None


def _wan_steps(vae: nn.Module, z: Tensor) -> CausalSteps:
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    def step(piece: Tensor, cache: list, first: bool) -> tuple[Tensor, list]:
        cache = list(cache)  # the decoder writes into it; a recomputed step must start from the same one
        return vae.decoder(piece, feat_cache=cache, feat_idx=[0], first_chunk=first), cache

    def finish(frames: Tensor) -> Tensor:
        if vae.config.patch_size is not None:
            frames = unpatchify(frames, patch_size=vae.config.patch_size)
        return frames.clamp(-1.0, 1.0)

    x = vae.post_quant_conv(z)
    pieces = list(x.split(1, dim=2))
    return CausalSteps(pieces, step, finish, [None] * vae._cached_conv_counts["decoder"])


def _cogvideox_steps(vae: nn.Module, z: Tensor) -> CausalSteps:
    def step(piece: Tensor, cache: dict | None, first: bool) -> tuple[Tensor, dict]:
        if vae.post_quant_conv is not None:
            piece = vae.post_quant_conv(piece)
        return vae.decoder(piece, conv_cache=cache)  # returns a new cache; the old one is untouched

    size, frames = vae.num_latent_frames_batch_size, z.shape[2]
    first = size + frames % size  # the first group takes the remainder, as diffusers slices it
    rest = list(z[:, :, first:].split(size, dim=2)) if frames > first else []
    return CausalSteps([z[:, :, :first], *rest], step, lambda frames: frames)


class CausalDecoding:
    """``decode`` for a backbone with a causal 3D VAE: ``vae_input`` (the family's latents as
    the VAE takes them), then ``decode_causal``."""

    vae: nn.Module
    # Decoder steps per checkpoint while gradients are recorded; None: one plain ``vae.decode``.
    # The memory options set it (``rlr_video.memory.checkpointing``).
    decode_checkpoint_chunk: int | None = None

    def vae_input(self, latents: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:
        """Frames (B, F, 3, H, W) in [0, 1]; differentiable."""
        video = decode_causal(self.vae, self.vae_input(latents), self.decode_checkpoint_chunk)
        return to_unit_range(video.permute(0, 2, 1, 3, 4))


STEPS: dict[str, Callable[[nn.Module, Tensor], CausalSteps]] = {
    "AutoencoderKLWan": _wan_steps,
    "AutoencoderKLCogVideoX": _cogvideox_steps,
}


def supports_chunked_decode(vae: nn.Module | None) -> bool:
    return vae is not None and type(vae).__name__ in STEPS and not getattr(vae, "use_tiling", False)


def causal_steps(vae: nn.Module, z: Tensor) -> CausalSteps:
    """The decoding loop of ``vae`` on latents ``z`` (B, C, F_lat, h, w)."""
    return STEPS[type(vae).__name__](vae, z)


def _run(step: Callable, pieces: list[Tensor], cache: Any, first: bool) -> tuple[Tensor, Any]:
    frames = []
    for i, piece in enumerate(pieces):
        out, cache = step(piece, cache, first and i == 0)
        frames.append(out)
    return torch.cat(frames, dim=2), cache


def decode_causal(vae: nn.Module, z: Tensor, chunk: int | None = None) -> Tensor:
    """``vae.decode(z)``'s frames (B, 3, F, H, W) in [-1, 1]. While gradients are recorded and
    ``chunk`` is set, each video is decoded on its own, ``chunk`` decoder steps (latent-frame
    groups) per checkpoint: the backward pass recomputes one video's ``chunk`` steps at a time."""
    if chunk is None or not torch.is_grad_enabled() or not supports_chunked_decode(vae):
        return vae.decode(z, return_dict=False)[0]
    return torch.cat([_decode_checkpointed(vae, video, chunk) for video in z.split(1)])


def _decode_checkpointed(vae: nn.Module, z: Tensor, chunk: int) -> Tensor:
    steps = causal_steps(vae, z)
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
    frames: int  # frames of the decoded clip
    steps: int  # decoder steps (checkpoints) per video


def decode_profile(vae: nn.Module, z: Tensor) -> DecodeProfile:
    """Run the decoding loop on one video of ``z`` without gradients and measure it; on the
    meta device this costs a model without its weights and computes nothing."""
    carried, largest, frames = 0, 0, 0
    with torch.no_grad():
        steps = causal_steps(vae, z[:1])
        cache = steps.cache
        for i, piece in enumerate(steps.pieces):
            out, cache = steps.step(piece, cache, i == 0)
            cached = [t for t in tree_leaves(cache) if isinstance(t, Tensor)]
            carried = max(carried, sum(t.numel() * t.element_size() for t in cached))
            largest, frames = max(largest, out.shape[2]), frames + out.shape[2]
    return DecodeProfile(carried, largest, frames, len(steps.pieces))
