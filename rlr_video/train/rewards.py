"""The reward as the trainer sees it: the zoo's reward on each prompt's final text, its
terms recorded for logging, minus the per-prompt baseline."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from rewards import CompositeReward, Reward, as_reward
from rlr_video.train.prompts import final_prompt


class TrainingReward:
    """What the estimator calls: the configured reward on the final prompt, minus a baseline.

    It records the raw (uncentred) rewards and terms of the first call after ``reset()``:
    estimators score a rollout once before any pathwise re-evaluation of the same sample.
    """

    def __init__(self, reward: Reward, baseline: Callable[[Sequence[str]], Tensor] | None = None):
        self.reward, self.baseline = as_reward(reward), baseline
        self.name, self.differentiable = self.reward.name, self.reward.differentiable
        self.reset()

    def reset(self) -> None:
        self.raw: Tensor | None = None
        self.terms: dict[str, Tensor] = {}

    def _score(self, frames: Tensor, prompts: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        if isinstance(self.reward, CompositeReward):
            terms = self.reward.score_terms(frames, prompts)
            return self.reward.combine(terms), terms
        value = self.reward(frames, prompts)
        return value, {self.reward.name: value}

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        value, terms = self._score(frames, [final_prompt(p) for p in prompts])
        if self.raw is None:
            self.raw = value.detach().float().cpu()
            self.terms = {k: v.detach().float().cpu() for k, v in terms.items()}
        if self.baseline is not None:
            value = value - self.baseline(prompts).to(value)
        return value
