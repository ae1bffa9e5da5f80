"""Gradient estimators: each ``estimate(backbone, reward, prompts, generator)`` adds an
estimate of -grad E[R] (the loss gradient) to ``p.grad`` of the backbone's trainable
parameters and returns per-part diagnostics."""

from typing import Protocol

from rlr_video.estimators.baselines import LR, FullBP, TruncatedBP
from rlr_video.estimators.common import RewardBaseline
from rlr_video.estimators.rlr import RLR
from rlr_video.estimators.split import StartSampler


class Estimator(Protocol):
    def estimate(self, backbone, reward, prompts, generator) -> dict[str, float]: ...


__all__ = ["LR", "RLR", "Estimator", "FullBP", "RewardBaseline", "StartSampler", "TruncatedBP"]
