"""Truncated backpropagation (AlignProp, VADER, DRaFT-K): backprop through the last K steps only,
biased by every dropped step (paper Prop. 6.1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlr_video.errors import ConfigError
from rlr_video.estimators.common import randint
from rlr_video.estimators.pathwise import pathwise
from rlr_video.estimators.registry import (
    BaseEstimator,
    Estimate,
    EstimatorConfig,
    RunContext,
    bounds,
    register_estimator,
)


@dataclass
class TruncatedBPConfig(EstimatorConfig):
    """``estimator.name: truncated_bp``."""

    name: str = "truncated_bp"
    K: int = field(default=1, metadata=bounds(1))  # steps with gradients (VADER / DRaFT-1: 1)
    randomized: bool = False  # draw the truncation uniformly from 1..K per update (AlignProp)

    def validate(self, run: RunContext) -> None:
        super().validate(run)
        if run.num_steps < self.K:
            raise ConfigError("estimator.K", self.K, f"1 ... {run.num_steps} (model.num_steps)")

    def build(self, run: RunContext) -> TruncatedBP:
        return TruncatedBP(K=self.K, randomized=self.randomized)


@register_estimator("truncated_bp", TruncatedBPConfig)
class TruncatedBP(BaseEstimator):
    """Backprop through the last ``K`` steps (AlignProp / VADER / DRaFT-K); biased.

    Args:
        K: steps with gradients (K = 1 is the common VADER / DRaFT-1 setting).
        randomized: draw the truncation uniformly from 1..K per update (AlignProp).
    """

    def __init__(self, K: int = 1, randomized: bool = False):
        if K < 1:
            raise ValueError(f"K={K} must be >= 1")
        self.K, self.randomized = K, randomized

    def estimate(
        self, backbone, reward, prompts: Sequence[str], generator: torch.Generator, reward_offset: Tensor | None = None
    ) -> Estimate:
        k = min(self.K, backbone.num_steps)
        if self.randomized:
            k = 1 + randint(generator, k)
        return pathwise(backbone, reward, prompts, generator, k)
