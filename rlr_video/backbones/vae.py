"""Latents to frames: per-frame decoding with 2D VAEs, pixel-space models, and the [0, 1]
mapping every pipeline's ``postprocess_video`` applies."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def to_unit_range(video: Tensor) -> Tensor:
    """[-1, 1] model space to [0, 1] frames, clamped (``VaeImageProcessor.denormalize``)."""
    return (video.float() / 2 + 0.5).clamp(0, 1)


def decode_frames_2d(vae: nn.Module | None, latents: Tensor, chunk_size: int = 16) -> Tensor:
    """Decode (B, C, F, h, w) latents frame by frame with a 2D VAE to (B, F, 3, H, W) in [0, 1].

    Frames go through the VAE ``chunk_size`` at a time (they are independent), which bounds
    the decoder's activation memory when gradients flow through it. Without a VAE the
    model is pixel-space: the latents already are [-1, 1] RGB frames.
    """
    b, c, f, h, w = latents.shape
    frames = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    if vae is None:
        return to_unit_range(frames.reshape(b, f, c, h, w))
    frames = frames.to(vae.dtype) * (1 / vae.config.scaling_factor)  # as the pipelines write it
    chunk_size = max(1, int(chunk_size))
    images = torch.cat([vae.decode(chunk).sample for chunk in frames.split(chunk_size)])
    return to_unit_range(images.reshape(b, f, *images.shape[1:]))
