"""Pieces every estimator shares: reward baselines, per-part gradient accumulation, and
counting denoiser calls."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rlr_video.chain import predict

BASELINES = ("loo", "group", "running", "none")


class RewardBaseline:
    """Turns rewards R into advantages A = R - b with b independent of each sample's own draw,
    so every likelihood-ratio term stays unbiased.

    - ``loo``: batch leave-one-out mean (b_i = mean of the other samples; 0 for a batch of 1).
    - ``group``: leave-one-out within each prompt's group (b_i = mean of the *other* videos of
      the same prompt, as GRPO-style trainers do with ``train.group_size`` videos per prompt):
      it removes the prompt's own difficulty from the advantage. A prompt alone in the batch
      falls back to the batch leave-one-out. Unbiased: b_i never uses sample i's draw.
    - ``running``: per-prompt running mean of earlier updates (prompts seen for the first
      time fall back to leave-one-out); updated after the advantages are taken.
    - ``none``: b = 0.

    ``normalize`` divides by the batch std: lower variance, but no longer unbiased, so it
    is off by default.
    """

    def __init__(self, kind: str = "loo", normalize: bool = False, decay: float = 0.9):
        if kind not in BASELINES:
            raise ValueError(f"baseline={kind!r}: expected one of {BASELINES}")
        self.kind, self.normalize, self.decay = kind, normalize, decay
        self.running: dict[str, float] = {}

    def __call__(self, rewards: Tensor, prompts: Sequence[str]) -> Tensor:
        r = rewards.detach().float()
        b = torch.zeros_like(r)
        n = len(r)
        if self.kind != "none" and n > 1:
            b = (r.sum() - r) / (n - 1)
        if self.kind == "group":
            for i, p in enumerate(prompts):
                others = [j for j, q in enumerate(prompts) if q == p and j != i]
                if others:
                    b[i] = r[others].mean()
        if self.kind == "running":
            for i, p in enumerate(prompts):
                if p in self.running:
                    b[i] = self.running[p]
            for i, p in enumerate(prompts):
                old = self.running.get(p)
                self.running[p] = float(r[i]) if old is None else self.decay * old + (1 - self.decay) * float(r[i])
        advantages = r - b
        if self.normalize and n > 1:
            advantages = advantages / (r.std() + 1e-8)
        return advantages


class GradPart:
    """Gradients of one part of an estimate (FO, HO or ZO), kept apart until ``flush`` so
    each part's norm can be reported; ``add`` may be called once per loss term, which lets
    the graph of each term be freed before the next one is built."""

    def __init__(self, params: Sequence[torch.nn.Parameter]):
        self.params = list(params)
        self.grads: list[Tensor | None] = [None] * len(self.params)

    def add(self, loss: Tensor) -> None:
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for i, g in enumerate(grads):
            if g is not None:
                self.grads[i] = g if self.grads[i] is None else self.grads[i] + g

    def add_tensors(self, tensors: Sequence[Tensor], scale: float) -> None:
        for i, t in enumerate(tensors):
            g = t * scale
            self.grads[i] = g if self.grads[i] is None else self.grads[i] + g

    def norm(self) -> float:
        sq = sum(float(g.double().pow(2).sum()) for g in self.grads if g is not None)
        return math.sqrt(sq)

    def flush(self) -> float:
        """Add the accumulated gradients into ``p.grad``; returns this part's norm."""
        for p, g in zip(self.params, self.grads):
            if g is not None:
                g = g.to(p.dtype)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.add_(g)
        return self.norm()


@dataclass
class CallCount:
    """Denoiser calls of one update: forward-only and forward-with-backward."""

    forward: int = 0
    backward: int = 0

    @property
    def equivalents(self) -> int:
        """Compute in forward-call equivalents (a backward costs about two forwards)."""
        return self.forward + 2 * self.backward


def check_prompts(prompts: Sequence[str]) -> None:
    """One prompt per video: a bare string would be a batch of its characters."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts) or not prompts:
        raise TypeError(f"prompts: expected a non-empty list of strings, one per video; got {prompts!r:.80}")


def score(reward, frames: Tensor, prompts: Sequence[str]) -> Tensor:
    """``reward(frames, prompts)``, checked to be one score per video: a (B, 1) or (B, F) output
    would broadcast against (B,) advantages and silently give a wrong gradient."""
    rewards = reward(frames, prompts)
    if not isinstance(rewards, Tensor) or tuple(rewards.shape) != (len(prompts),):
        got = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
        name = getattr(reward, "name", type(reward).__name__)
        want = f"one score per video, shape ({len(prompts)},)"
        raise ValueError(f"reward {name!r} returned {got}; a reward returns {want}")
    return rewards


def grad_norm(params: Sequence[torch.nn.Parameter]) -> float:
    sq = sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None)
    return math.sqrt(sq)


def skipped_stats(rewards: Tensor) -> dict[str, float]:
    """Diagnostics of an update skipped because a reward was NaN or infinite."""
    finite = rewards[torch.isfinite(rewards)]
    return {
        "skipped": 1.0,
        "reward_mean": float(finite.mean()) if len(finite) else float("nan"),
        "nonfinite_rewards": float((~torch.isfinite(rewards)).sum()),
    }


def reward_stats(rewards: Tensor) -> dict[str, float]:
    r = rewards.detach().float()
    return {
        "skipped": 0.0,
        "reward_mean": float(r.mean()),
        "reward_std": float(r.std()) if len(r) > 1 else 0.0,
    }


def step_log_prob(backbone, cond, traj, step: int, latents: Tensor | None = None, checkpoint: bool = False) -> Tensor:
    """log N(x_{t-1}; mean_theta(x_t, t), std_t^2) at a stored transition.

    x_t is the stored latent (detached: gradients reach the parameters only) unless
    ``latents`` gives a replayed one; the stored x_{t-1} is always detached.
    """
    x_t = traj.latents[step].detach() if latents is None else latents
    output = predict(backbone, x_t, step, cond, checkpoint)
    mean, std = backbone.transition.mean_std(output, step, x_t)
    return backbone.transition.log_prob(traj.latents[step - 1].detach(), mean, std)


def require_noise(transition, steps, why: str) -> None:
    """Likelihood-ratio terms need noise: name the deterministic steps if there are any."""
    silent = [t for t in steps if transition.noise_std(t) <= 0]
    if silent:
        raise ValueError(
            f"{why} needs stochastic steps, but steps {silent} have noise std 0; "
            "use eta > 0 (DDIM) or a flow noise_level > 0"
        )


def randint(generator: torch.Generator, high: int) -> int:
    """A uniform integer in [0, high) from the caller's generator (CPU or CUDA)."""
    return int(torch.randint(high, (), generator=generator, device=generator.device))
