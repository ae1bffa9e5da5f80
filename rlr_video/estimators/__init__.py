"""Gradient estimators, one file each, registered by name (``registry.py``).

Each ``estimate(backbone, reward, prompts, generator)`` adds an estimate of -grad E[R] (the loss
gradient) to ``p.grad`` of the backbone's trainable parameters and returns an ``Estimate``
(diagnostics, the batch's rewards, whether the update was skipped).

- ``rlr``: the Recursive Likelihood Ratio estimator (``RLR``);
- ``full_bp``, ``truncated_bp``: backpropagation through all or the last K steps;
- ``lr``: DDPO's REINFORCE with an optional PPO clip (``Reinforce``, also importable as ``LR``);
- ``grpo``: Flow-GRPO's clipped, group-normalised update with a KL to the reference (``GRPO``);
- ``nft``: DiffusionNFT's likelihood-free update on the forward process (``NFT``).
"""

from rlr_video.estimators.common import RewardBaseline
from rlr_video.estimators.full_bp import FullBP
from rlr_video.estimators.grpo import GRPO
from rlr_video.estimators.lr import LR, Reinforce
from rlr_video.estimators.nft import NFT
from rlr_video.estimators.registry import (
    BaseEstimator,
    Estimate,
    Estimator,
    EstimatorConfig,
    RunContext,
    available_estimators,
    config_class,
    estimator_class,
    register_estimator,
)
from rlr_video.estimators.rlr import RLR
from rlr_video.estimators.split import StartSampler
from rlr_video.estimators.truncated_bp import TruncatedBP

__all__ = [
    "GRPO",
    "LR",
    "NFT",
    "RLR",
    "BaseEstimator",
    "Estimate",
    "Estimator",
    "EstimatorConfig",
    "FullBP",
    "Reinforce",
    "RewardBaseline",
    "RunContext",
    "StartSampler",
    "TruncatedBP",
    "available_estimators",
    "config_class",
    "estimator_class",
    "register_estimator",
]
