"""DDPO's likelihood-ratio (REINFORCE) estimator over every stochastic step, with an optional PPO
clip over ``inner_epochs`` reuses of one batch (Black et al. 2023, kvablack/ddpo-pytorch
``scripts/train.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rlr_video.chain import Trajectory, rollout
from rlr_video.errors import ConfigError
from rlr_video.estimators.common import (
    AdvantageConfig,
    CallCount,
    GradPart,
    RewardBaseline,
    all_finite,
    centred,
    check_prompts,
    check_state_baseline,
    finished,
    grad_norm,
    require_x0,
    score,
    skipped,
    state_values,
    step_log_prob,
)
from rlr_video.estimators.registry import BaseEstimator, Estimate, RunContext, bounds, register_estimator


@dataclass
class LRConfig(AdvantageConfig):
    """``estimator.name: lr``: DDPO's REINFORCE (see ``Reinforce``)."""

    name: str = "lr"
    ppo_clip: float | None = field(default=None, metadata=bounds(0.0))  # PPO's clip range on the ratio
    inner_epochs: int = field(default=1, metadata=bounds(1))  # updates per sampled batch (needs ppo_clip)

    def validate(self, run: RunContext) -> None:
        super().validate(run)
        if self.inner_epochs > 1:
            if self.ppo_clip is None:
                raise ConfigError("estimator.inner_epochs", self.inner_epochs, "1 unless estimator.ppo_clip is set")
            if run.grad_accum != 1:  # the estimator keeps one batch to reuse, not one per micro-batch
                raise ConfigError("train.grad_accum", run.grad_accum, "1 when estimator.inner_epochs > 1")

    def build(self, run: RunContext) -> Reinforce:
        return Reinforce(self.baseline, self.normalize, self.ppo_clip, self.inner_epochs, self.state_baseline)


@dataclass
class _Batch:
    """A sampled batch kept for PPO's inner epochs (``cond`` None: encode the prompts again)."""

    prompts: list[str]
    cond: Any
    traj: Trajectory
    rewards: Tensor
    terms: dict[str, Tensor]
    advantages: dict[int, Tensor]  # per scored step (they differ with a state baseline)
    old_log_probs: dict[int, Tensor]
    uses_left: int

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only; the conditioning is encoded again after a resume
        (the same text encoder on the same prompts gives the same embeddings)."""
        traj = {"latents": self.traj.latents, "noises": self.traj.noises, "stds": self.traj.stds}
        plain = {k: v for k, v in vars(self).items() if k not in ("cond", "traj")}
        return {**plain, "traj": {**traj, "extras": dict(self.traj.extras)}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Batch:
        traj = Trajectory(**state["traj"])
        return cls(**{**state, "traj": traj, "cond": None})


@register_estimator("lr", LRConfig)
class Reinforce(BaseEstimator):
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
        if state_baseline:
            check_state_baseline(baseline)
        self.baseline = RewardBaseline(baseline, normalize)
        self.state_baseline = state_baseline
        self.ppo_clip, self.inner_epochs = ppo_clip, inner_epochs
        self.updates_per_batch = inner_epochs
        self._batch: _Batch | None = None

    def _sample(self, backbone, reward, prompts, generator, steps, offset, calls: CallCount) -> _Batch | Estimate:
        with torch.no_grad():
            cond = backbone.encode(prompts)
            traj = rollout(backbone, cond, generator, len(prompts), keep_x0=self.state_baseline)
            raw, terms = score(reward, backbone.decode(traj.sample), prompts)
        calls.forward += backbone.num_steps
        if not all_finite(raw):
            return skipped(raw, terms)
        rewards = centred(raw, offset)
        if self.state_baseline:
            values = state_values(backbone, reward, traj, steps, prompts, offset)
            advantages = {t: self.baseline(rewards, prompts, values[t]) for t in steps}
        else:
            advantages = dict.fromkeys(steps, self.baseline(rewards, prompts))
        return _Batch(list(prompts), cond, traj, raw, terms, advantages, {}, self.inner_epochs)

    def estimate(
        self, backbone, reward, prompts: Sequence[str], generator: torch.Generator, reward_offset: Tensor | None = None
    ) -> Estimate:
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
            batch = self._sample(backbone, reward, prompts, generator, steps, reward_offset, calls)
            if isinstance(batch, Estimate):
                return batch
        elif batch.cond is None:  # a batch restored from a checkpoint
            with torch.no_grad():
                batch.cond = backbone.encode(batch.prompts)
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

        stats = dict(
            zo_norm=part.flush(),
            grad_norm=grad_norm(params),
            calls_forward=float(calls.forward),
            calls_backward=float(calls.backward),
            calls_reward=float(sampled) * (1 + (len(steps) if self.state_baseline else 0)),
            backprop_depth=1.0,
        )
        if self.ppo_clip is not None:
            stats["clip_fraction"] = clipped
        return finished(stats, batch.rewards, batch.terms, fresh=sampled)

    def state_dict(self) -> dict[str, Any]:
        batch = self._batch.state_dict() if self._batch is not None else None
        return {"baseline": self.baseline.state_dict(), "batch": batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline.load_state_dict(state["baseline"])
        self._batch = _Batch.from_state(state["batch"]) if state["batch"] is not None else None


LR = Reinforce  # the name it had: "LR" is the likelihood ratio, not a learning rate
