"""The estimators RLR is compared with, in the same harness so comparisons are fair.

- ``FullBP``: backpropagation through the whole chain (exact pathwise gradient; memory
  grows with T).
- ``TruncatedBP``: backprop through the last K steps only (AlignProp, VADER, DRaFT-K);
  biased by every dropped step (paper Prop. 6.1).
- ``LR``: DDPO's REINFORCE, the likelihood ratio of every stochastic step, with an
  optional PPO clip over ``inner_epochs`` reuses of one batch of samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rewards import as_reward
from rlr_video.chain import Trajectory, chain_step, draw_noise, rollout
from rlr_video.estimators.common import (
    CallCount,
    GradPart,
    RewardBaseline,
    check_prompts,
    grad_norm,
    randint,
    require_x0,
    reward_stats,
    score,
    skipped_stats,
    state_values,
    step_log_prob,
)


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


def _pathwise(backbone, reward, prompts, generator, grad_steps: int) -> dict[str, float]:
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
        rewards = score(reward, backbone.decode(x0), prompts)
        if not bool(torch.isfinite(rewards).all()):
            return skipped_stats(rewards.detach())
        part.add(-rewards.mean())
    stats = reward_stats(rewards)
    stats.update(
        fo_norm=part.flush(),
        grad_norm=grad_norm(params),
        calls_forward=float(backbone.num_steps),
        calls_backward=float(grad_steps),
        calls_reward=1.0,
        backprop_depth=float(grad_steps),
    )
    return stats


class FullBP:
    """Backpropagation through every step of the chain: the exact pathwise gradient."""

    def estimate(self, backbone, reward, prompts: Sequence[str], generator: torch.Generator) -> dict[str, float]:
        return _pathwise(backbone, reward, prompts, generator, backbone.num_steps)


class TruncatedBP:
    """Backprop through the last ``K`` steps (AlignProp / VADER / DRaFT-K); biased.

    Args:
        K: steps with gradients (K = 1 is the common VADER / DRaFT-1 setting).
        randomized: draw the truncation uniformly from 1..K per update (AlignProp).
    """

    def __init__(self, K: int = 1, randomized: bool = False):
        if K < 1:
            raise ValueError(f"K={K} must be >= 1")
        self.K, self.randomized = K, randomized

    def estimate(self, backbone, reward, prompts: Sequence[str], generator: torch.Generator) -> dict[str, float]:
        k = min(self.K, backbone.num_steps)
        if self.randomized:
            k = 1 + randint(generator, k)
        return _pathwise(backbone, reward, prompts, generator, k)


@dataclass
class _Batch:
    """A sampled batch kept for PPO's inner epochs."""

    prompts: list[str]
    cond: object
    traj: Trajectory
    rewards: Tensor
    advantages: dict[int, Tensor]  # per scored step (they differ with a state baseline)
    old_log_probs: dict[int, Tensor]
    uses_left: int


class LR:
    """DDPO's likelihood-ratio (REINFORCE) estimator over every stochastic step.

    Steps with noise std 0 (e.g. a deterministic last DDIM step) have no likelihood ratio
    and are left out, as in DDPO. With ``ppo_clip`` the surrogate is PPO's clipped ratio,
    taken per dimension (the ratio of summed log-densities of a video latent would be
    astronomically far from 1) and scaled back so that on-policy its gradient is exactly
    REINFORCE; a batch is then reused for ``inner_epochs`` consecutive updates.
    ``state_baseline``: per step, subtract the reward of x0_hat(x_t) first (see ``RLR``).
    """

    def __init__(
        self,
        baseline: str = "loo",
        normalize: bool = False,
        ppo_clip: float | None = None,
        inner_epochs: int = 1,
        state_baseline: bool = False,
    ):
        if inner_epochs > 1 and ppo_clip is None:
            raise ValueError("inner_epochs > 1 reuses off-policy samples and needs ppo_clip")
        if state_baseline and baseline not in ("loo", "group"):
            raise ValueError(f"state_baseline needs baseline loo or group, not {baseline!r}")
        self.baseline = RewardBaseline(baseline, normalize)
        self.state_baseline = state_baseline
        self.ppo_clip, self.inner_epochs = ppo_clip, inner_epochs
        self._batch: _Batch | None = None

    def _sample(self, backbone, reward, prompts, generator, steps, calls: CallCount) -> _Batch | dict[str, float]:
        with torch.no_grad():
            cond = backbone.encode(prompts)
            traj = rollout(backbone, cond, generator, len(prompts), keep_x0=self.state_baseline)
            rewards = score(reward, backbone.decode(traj.sample), prompts)
        calls.forward += backbone.num_steps
        if not bool(torch.isfinite(rewards).all()):
            return skipped_stats(rewards)
        if self.state_baseline:
            values = state_values(backbone, reward, traj, steps, prompts)
            advantages = {t: self.baseline(rewards, prompts, values[t]) for t in steps}
        else:
            advantages = dict.fromkeys(steps, self.baseline(rewards, prompts))
        return _Batch(list(prompts), cond, traj, rewards, advantages, {}, self.inner_epochs)

    def estimate(self, backbone, reward, prompts: Sequence[str], generator: torch.Generator) -> dict[str, float]:
        check_prompts(prompts)
        params = backbone.trainable_parameters()
        calls = CallCount()
        steps = [t for t in range(1, backbone.num_steps + 1) if backbone.transition.noise_std(t) > 0]
        if not steps:
            raise ValueError("the LR estimator needs stochastic steps: use eta > 0 or a flow noise_level > 0")
        if self.state_baseline:
            require_x0(backbone.transition)
        batch = self._batch
        sampled = batch is None or batch.uses_left == 0 or batch.prompts != list(prompts)
        if sampled:
            batch = self._sample(backbone, reward, prompts, generator, steps, calls)
            if isinstance(batch, dict):
                return batch
        batch.uses_left -= 1
        self._batch = batch if batch.uses_left > 0 else None
        part = GradPart(params)
        clipped = 0.0
        for t in steps:
            with torch.enable_grad():
                log_prob = step_log_prob(backbone, batch.cond, batch.traj, t)
                if self.ppo_clip is None:
                    loss = -(batch.advantages[t] * log_prob).mean()
                else:
                    old = batch.old_log_probs.setdefault(t, log_prob.detach())
                    dims = batch.traj.latents[t].flatten(1).shape[1]
                    ratio = torch.exp((log_prob - old) / dims)
                    bounded = ratio.clamp(1 - self.ppo_clip, 1 + self.ppo_clip)
                    surrogate = torch.minimum(ratio * batch.advantages[t], bounded * batch.advantages[t])
                    loss = -(dims * surrogate).mean()
                    clipped += float(((ratio - 1).abs() > self.ppo_clip).float().mean()) / len(steps)
                part.add(loss)
        calls.forward += len(steps)
        calls.backward += len(steps)

        stats = reward_stats(batch.rewards)
        stats.update(
            zo_norm=part.flush(),
            grad_norm=grad_norm(params),
            calls_forward=float(calls.forward),
            calls_backward=float(calls.backward),
            calls_reward=float(sampled) * (1 + (len(steps) if self.state_baseline else 0)),
            backprop_depth=1.0,
        )
        if self.ppo_clip is not None:
            stats["clip_fraction"] = clipped
        return stats
