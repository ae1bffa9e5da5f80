"""Evaluate a backbone on the testbed: fixed prompts and seeds -> reward and ground truth.

The same (prompt, seed) pairs are sampled before and after fine-tuning, so the difference is
paired: it shows what the weights changed, not which noise was drawn. The reward is the one
being optimised; the analytic scorer (:mod:`rlr_video.testbed.scorer`) is the referee that a
hacked reward cannot fool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from rlr_video.chain.sample import eval_set, sample_videos
from rlr_video.testbed.scorer import score_batch
from rlr_video.testbed.word_swap import retarget

GROUND_TRUTH_KEYS = ("colour", "shape", "direction", "all")
__all__ = ["GROUND_TRUTH_KEYS", "eval_set", "evaluate"]


@torch.no_grad()
def evaluate(
    backbone,
    reward,
    prompts: Sequence[str],
    seeds: Sequence[int],
    batch_size: int = 16,
    target: Mapping[str, str] | None = None,
) -> dict:
    """Sample one video per (prompt, seed), score it with ``reward`` and the ground truth.

    Returns per-video ``rewards`` and the mean of each value: ``reward`` and its standard error
    ``reward_se`` over the videos, and the ground-truth accuracies ``colour``, ``shape``,
    ``direction`` and ``all`` (all three right). With ``target`` (e.g. ``{"direction":
    "down"}``, what a retargeted reward asks for) the ground truth is checked against each
    prompt rewritten with those words instead of the prompt itself.
    """
    rewards: list[float] = []
    truth: dict[str, list[float]] = {k: [] for k in GROUND_TRUTH_KEYS}
    for start in range(0, len(prompts), batch_size):
        batch_prompts = list(prompts[start : start + batch_size])
        videos = sample_videos(backbone, batch_prompts, seeds[start : start + batch_size])
        rewards += reward(videos, batch_prompts).float().tolist()
        asked = [retarget(p, target) for p in batch_prompts] if target else batch_prompts
        scores = score_batch(videos, asked)
        for key in GROUND_TRUTH_KEYS:
            truth[key] += scores[key].tolist()
    values = np.asarray(rewards, dtype=np.float64)
    result = {
        "rewards": rewards,
        "reward": float(values.mean()),
        "reward_se": float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan"),
    }
    result.update({key: float(np.mean(v)) for key, v in truth.items()})
    return result
