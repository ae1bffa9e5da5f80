"""Sampling the chain without gradients, and replaying any span of it with gradients.

``rollout`` stores everything a later gradient estimate needs: every latent x_t, the noise
eps_t injected at each step and its std. ``replay`` recomputes a span from a stored latent
with the stored noises (the reparameterisation), which reproduces the rollout exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor


@dataclass
class Trajectory:
    """One sampled chain, indexed by step: ``latents[t]`` is x_t for t = 0 ... T and
    ``noises[t]`` / ``stds[t]`` are the eps_t and std of step t (x_t -> x_{t-1});
    index 0 of ``noises`` and ``stds`` is unused. A std is a float when the transition's
    is a scalar, and the (detached) tensor when it varies per sample or per element.
    ``extras`` holds what an estimator adds, e.g. the seeds of the parameter perturbations
    of ``param_es`` (``zo_seeds``)."""

    latents: list[Tensor]
    noises: list[Tensor | None]
    stds: list[float | Tensor]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.latents) - 1

    @property
    def sample(self) -> Tensor:
        return self.latents[0]


def predict(backbone, latents: Tensor, step: int, cond, checkpoint: bool = False) -> Tensor:
    """``backbone.predict``; with ``checkpoint`` (and gradients on) the call's activations are
    recomputed in the backward pass instead of stored (``torch.utils.checkpoint``,
    non-reentrant: the RNG state is replayed, so dropout masks match)."""
    if checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(backbone.predict, latents, step, cond, use_reentrant=False)
    return backbone.predict(latents, step, cond)


def chain_step(
    backbone, cond, latents: Tensor, step: int, noise: Tensor, checkpoint: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """One transition x_t -> x_{t-1} = mean + std * noise; returns (x_{t-1}, mean, std).
    ``checkpoint``: recompute the denoiser call in the backward pass (see ``predict``)."""
    output = predict(backbone, latents, step, cond, checkpoint)
    mean, std = backbone.transition.mean_std(output, step, latents)
    return mean + std * noise, mean, std


def draw_noise(like: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal noise shaped like ``like``, drawn on the generator's device so a
    seed gives the same noise whatever device the model runs on."""
    noise = torch.randn(like.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(like.device, like.dtype)


@torch.no_grad()
def rollout(
    backbone,
    cond,
    generator: torch.Generator,
    batch_size: int,
    step_context: Callable[[int], AbstractContextManager] | None = None,
    keep_x0: bool = False,
    stochastic: Collection[int] | None = None,
) -> Trajectory:
    """Sample x_T -> x_0 without gradients and store latents, noises and stds.

    Args:
        step_context: optional ``step -> context manager`` entered around the denoiser
            call of a step; parameter-perturbation ZO uses it to run a step at theta + s u.
        keep_x0: also store the denoiser's clean estimate x0_hat(x_t) of every step in
            ``extras["x0"]`` (indexed by step; needs ``transition.predict_x0``). It costs no
            extra denoiser call: the state-dependent baseline scores these.
        stochastic: the steps that inject noise (None: every step, as the transition says);
            the others use ``transition.deterministic()`` (DDIM eta 0, the flow ODE) and store
            std 0. Flow-GRPO-Fast's SDE window; an empty set samples the deterministic chain.
            The noise of every step is drawn all the same, so a seed gives the same draws with
            or without a window. ``replay`` follows the transition itself: it reproduces such a
            chain only over stochastic steps.
    """
    x = backbone.initial_latents(batch_size, generator)
    T, transition = backbone.num_steps, backbone.transition
    quiet = None
    if stochastic is not None:
        if not callable(getattr(transition, "deterministic", None)):
            raise ValueError(
                f"rollout(stochastic=...) needs transition.deterministic(); {type(transition).__name__} has none"
            )
        quiet = transition.deterministic()
    latents: list[Tensor] = [x] * (T + 1)
    noises: list[Tensor | None] = [None] * (T + 1)
    stds: list[float | Tensor] = [0.0] * (T + 1)
    x0s: list[Tensor | None] = [None] * (T + 1)
    for step in range(T, 0, -1):
        noise = draw_noise(x, generator)
        with step_context(step) if step_context else nullcontext():
            output = backbone.predict(x, step, cond)
        taken = transition if quiet is None or step in stochastic else quiet
        mean, std = taken.mean_std(output, step, x)
        if keep_x0:
            x0s[step] = transition.predict_x0(output, step, x)
        x = mean + std * noise
        latents[step - 1], noises[step], stds[step] = x, noise, float(std) if std.numel() == 1 else std
    return Trajectory(latents, noises, stds, {"x0": x0s} if keep_x0 else {})


def replay(backbone, cond, traj: Trajectory, start: int, stop: int, checkpoint: bool = False) -> Tensor:
    """Recompute x_stop from the stored x_start through steps start ... stop + 1.

    Gradients flow to the parameters if enabled; the stored latent x_start is detached, and
    each step reuses its stored noise, so without parameter changes the result equals
    ``traj.latents[stop]`` exactly. ``checkpoint``: each call is recomputed in the backward
    pass, so a long span holds one call's activations at a time, not all of them.
    """
    if not 0 <= stop <= start <= traj.num_steps:
        raise ValueError(f"cannot replay from step {start} to {stop} of a {traj.num_steps}-step chain")
    x = traj.latents[start].detach()
    for step in range(start, stop, -1):
        x, _, _ = chain_step(backbone, cond, x, step, traj.noises[step], checkpoint)
    return x
