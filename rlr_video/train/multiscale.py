"""Multi-scale prompts as a backbone wrapper: each third of the chain sees its own text.

``MultiScaleBackbone`` is itself a ``VideoBackbone``: ``encode`` embeds the coarse, mid and
fine parts of each (encoded) prompt, and ``predict`` at step t uses the embedding of t's third.
Estimators, rollout and replay therefore need no change. Plain prompts use the same text in
all three thirds, so a file may mix both kinds.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from rlr_video.train.prompts import split_prompt, stage_of


class MultiScaleBackbone:
    """Wraps ``backbone``; every attribute it does not override is the wrapped one's."""

    def __init__(self, backbone):
        self.backbone = backbone

    def __getattr__(self, name: str):
        return getattr(self.backbone, name)

    def encode(self, prompts: Sequence[str]) -> tuple:
        parts = [split_prompt(p) or (p, p, p) for p in prompts]
        return tuple(self.backbone.encode([row[i] for row in parts]) for i in range(3))

    def predict(self, latents: Tensor, step: int, cond: tuple) -> Tensor:
        return self.backbone.predict(latents, step, cond[stage_of(step, self.backbone.num_steps)])
