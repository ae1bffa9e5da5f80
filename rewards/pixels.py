"""Pixel rewards: no model weights, differentiable, for toy backbones and quick checks.

``brightness`` (mean intensity), ``redness`` (red minus the mean of green and blue) and
``color_match`` (closeness to the colour the prompt names) are what a tiny CPU model can
climb in minutes; they also make reward hacking easy to see.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rewards.frames import check_frames
from rewards.registry import register_reward

COLORS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}


@register_reward("brightness", needs_prompts=False)
def brightness(frames: Tensor, prompts: Sequence[str]) -> Tensor:
    check_frames(frames, None, "brightness")
    return frames.float().mean(dim=(1, 2, 3, 4))


@register_reward("redness", needs_prompts=False)
def redness(frames: Tensor, prompts: Sequence[str]) -> Tensor:
    check_frames(frames, None, "redness")
    r, g, b = frames.float().unbind(2)
    return (r - 0.5 * (g + b)).mean(dim=(1, 2, 3))


@register_reward("color_match")
def color_match(frames: Tensor, prompts: Sequence[str]) -> Tensor:
    """1 - mean |pixel - the colour named in the prompt|; 0 for prompts that name none."""
    check_frames(frames, prompts, "color_match")
    scores = []
    for video, prompt in zip(frames.float(), prompts, strict=True):
        color = next((COLORS[w] for w in prompt.lower().split() if w in COLORS), None)
        if color is None:
            scores.append(video.sum() * 0.0)  # keeps the graph and the device
        else:
            target = torch.tensor(color, dtype=video.dtype, device=video.device)[None, :, None, None]
            scores.append(1.0 - (video - target).abs().mean())
    return torch.stack(scores)
