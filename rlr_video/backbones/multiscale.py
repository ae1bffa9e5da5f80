"""Multi-scale prompts as a backbone wrapper: each third of the chain sees its own text.

``MultiScaleBackbone`` is itself a ``VideoBackbone``: ``encode`` embeds the coarse, mid and
fine parts of each (encoded) prompt, and ``predict`` at step t uses the embedding of t's third.
Estimators, rollout and replay therefore need no change. Plain prompts use the same text in
all three thirds, so a file may mix both kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from rlr_video.prompts import Prompt, final_prompt, split_prompt, stage_of


@dataclass
class StagedConditioning:
    """The wrapped backbone's conditioning of each third (coarse, mid, fine)."""

    parts: tuple[Any, Any, Any]

    def select(self, index) -> StagedConditioning:
        """A sub-batch, where the wrapped conditioning supports it (``TextConditioning`` does)."""
        return StagedConditioning(tuple(part.select(index) for part in self.parts))

    def to(self, device) -> StagedConditioning:
        return StagedConditioning(tuple(part.to(device) for part in self.parts))


class MultiScaleBackbone:
    """Wraps ``backbone``; every attribute it does not override is the wrapped one's."""

    def __init__(self, backbone):
        self.backbone = backbone

    def __getattr__(self, name: str):
        return getattr(self.backbone, name)

    def encode(self, prompts: Sequence[str]) -> StagedConditioning:
        rows = [split_prompt(p) or (p, p, p) for p in prompts]
        return StagedConditioning(tuple(self.backbone.encode([row[i] for row in rows]) for i in range(3)))

    def predict(self, latents: Tensor, step: int, cond: StagedConditioning) -> Tensor:
        return self.backbone.predict(latents, step, cond.parts[stage_of(step, self.backbone.num_steps)])


def for_prompts(backbone, prompts: Sequence[Prompt]):
    """``backbone``, wrapped in ``MultiScaleBackbone`` when any of ``prompts`` is multi-scale."""
    multiscale = any(isinstance(p, tuple) or split_prompt(p) for p in prompts)
    return MultiScaleBackbone(backbone) if multiscale else backbone


class FinalPromptReward:
    """A reward that sees each prompt's final text: a multi-scale prompt reaches estimators as
    one string (``rlr_video.prompts.encode_prompt``), and rewards judge its fine part. Plain
    prompts pass through unchanged. Composite rewards keep their terms (``score_terms``)."""

    def __init__(self, reward):
        self.reward = reward
        self.name = getattr(reward, "name", type(reward).__name__)
        self.differentiable = getattr(reward, "differentiable", True)
        self.needs_prompts = getattr(reward, "needs_prompts", True)
        if callable(getattr(reward, "score_terms", None)):
            self.score_terms = lambda frames, prompts: reward.score_terms(frames, _final(prompts))
            self.combine = reward.combine

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        return self.reward(frames, _final(prompts))


def _final(prompts: Sequence[str]) -> list[str]:
    return [final_prompt(p) for p in prompts]
