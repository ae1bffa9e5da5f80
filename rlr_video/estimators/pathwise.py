"""Backpropagation through the last steps of the chain: what full and truncated backprop share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rewards import as_reward
from rlr_video.chain import chain_step, draw_noise
from rlr_video.estimators.common import GradPart, all_finite, check_prompts, finished, grad_norm, score, skipped
from rlr_video.estimators.registry import Estimate


def sample_with_grad(backbone, cond, generator: torch.Generator, batch: int, grad_steps: int) -> Tensor:
    """Sample x_0 with gradients through the last ``grad_steps`` steps only.

    Draws its noise in the same order as ``rollout``, so one seed gives the same video.
    """
    x = backbone.initial_latents(batch, generator)
    for step in range(backbone.num_steps, 0, -1):
        noise = draw_noise(x, generator)
        with torch.set_grad_enabled(step <= grad_steps):
            x, _, _ = chain_step(backbone, cond, x, step, noise)
    return x


def pathwise(backbone, reward, prompts: Sequence[str], generator: torch.Generator, grad_steps: int) -> Estimate:
    """-grad of the batch's mean reward through its last ``grad_steps`` steps, into ``p.grad``."""
    check_prompts(prompts)
    params = backbone.trainable_parameters()
    reward = as_reward(reward)  # a plain function: assumed differentiable
    if not reward.differentiable:
        raise ValueError(f"backpropagation needs a differentiable reward; {reward.name!r} is not")
    with torch.no_grad():
        cond = backbone.encode(prompts)
    part = GradPart(params)
    with torch.enable_grad():
        x0 = sample_with_grad(backbone, cond, generator, len(prompts), grad_steps)
        rewards, terms = score(reward, backbone.decode(x0), prompts)
        if not all_finite(rewards):
            return skipped(rewards, terms)
        part.add(-rewards.mean())
    stats = dict(
        fo_norm=part.flush(),
        grad_norm=grad_norm(params),
        calls_forward=float(backbone.num_steps),
        calls_backward=float(grad_steps),
        calls_reward=1.0,
        backprop_depth=float(grad_steps),
    )
    return finished(stats, rewards, terms)
