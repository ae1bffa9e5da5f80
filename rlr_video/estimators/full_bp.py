"""Full backpropagation through every step of the chain: the exact pathwise gradient (memory
grows with T). Any reward offset is a constant to it and changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rlr_video.estimators.pathwise import pathwise
from rlr_video.estimators.registry import BaseEstimator, Estimate, EstimatorConfig, RunContext, register_estimator


@dataclass
class FullBPConfig(EstimatorConfig):
    """``estimator.name: full_bp``: no keys of its own."""

    name: str = "full_bp"

    def build(self, run: RunContext) -> FullBP:
        return FullBP()


@register_estimator("full_bp", FullBPConfig)
class FullBP(BaseEstimator):
    """Backpropagation through every step of the chain: the exact pathwise gradient."""

    def estimate(
        self, backbone, reward, prompts: Sequence[str], generator: torch.Generator, reward_offset: Tensor | None = None
    ) -> Estimate:
        return pathwise(backbone, reward, prompts, generator, backbone.num_steps)
