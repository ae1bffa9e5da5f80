"""The reward zoo: models that score videos, and a registry to build them by name.

Every reward maps frames (B, F, 3, H, W) in [0, 1] and B prompts to (B,) scores, differentiably::

    from rewards import build_reward
    reward = build_reward({"aesthetic": 1.0, "clip": {"weight": 0.5, "model": "ViT-L-14"}})

Built in: ``aesthetic``, ``clip``, ``temporal``, ``flicker``, the weight-free pixel rewards
``brightness``, ``redness`` and ``color_match``, and, given their weights, ``hpsv2``,
``pickscore`` and ``videoalign``. See :mod:`rewards.registry` to register your own.
"""

# Importing the reward modules registers them.
from rewards import aesthetic, clip, flicker, hps, pickscore, pixels, temporal, videoalign  # noqa: F401
from rewards.base import Reward
from rewards.composite import CompositeReward
from rewards.loading import MissingWeightsError, clear_cache
from rewards.registry import (
    FunctionReward,
    as_reward,
    available_rewards,
    build_reward,
    check_reward_spec,
    register_reward,
    reward_sizes,
)

__all__ = [
    "CompositeReward",
    "FunctionReward",
    "MissingWeightsError",
    "Reward",
    "as_reward",
    "available_rewards",
    "build_reward",
    "check_reward_spec",
    "clear_cache",
    "register_reward",
    "reward_sizes",
]
