"""The testbed's rewards, registered into the reward zoo as a plugin.

The zoo (``rewards/``) knows nothing of the testbed: this module registers into it through the
entry point ``testbed`` of the group ``rewards.plugins`` (pyproject.toml), which the zoo imports
the first time a reward is looked up. It adds

- ``model: shapes-clip`` (or ``local-dir:PATH`` of a frame-grid video CLIP) to the ``clip``
  reward: the shipped shapes CLIP scores a whole video;
- ``clip_words``: the shapes CLIP's probability of reading each caption word right
  (:class:`~rlr_video.testbed.clip.CaptionWordReward`);
- ``truth``: the analytic ground truth (:mod:`rlr_video.testbed.scorer`), the share of the
  ``attributes`` a video shows right: the held-out reward a learned reward cannot fool
  (``train.eval``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from rewards.clip import register_video_clip
from rewards.loading import cached, freeze
from rewards.registry import register_reward
from rlr_video.testbed.clip import CaptionWordReward, load_shapes_clip, video_clip_folder
from rlr_video.testbed.scorer import ATTRIBUTES, GroundTruthReward
from rlr_video.testbed.word_swap import VALUES, retarget


@register_video_clip
def shapes_clip(model: str) -> tuple[str, Callable[[], nn.Module]] | None:
    """The frame-grid video CLIP ``model`` names (``shapes-clip``, ``local-dir:PATH``), or None."""
    folder = video_clip_folder(model)
    if folder is None:
        return None
    return str(folder.resolve()), lambda: load_shapes_clip(folder)


def clip_words(
    model: str = "shapes-clip",
    attributes: Sequence[str] | None = None,
    target: Mapping[str, str] | None = None,
    temperature: float = 1.0,
) -> CaptionWordReward:
    """The testbed's per-word caption reward (:class:`~rlr_video.testbed.clip.CaptionWordReward`)
    read by a video CLIP folder; ``target: {direction: right}`` rewards that word whatever the
    prompt says."""
    found = shapes_clip(model)
    if found is None:
        raise ValueError(f"clip_words: model {model!r} is not a video CLIP folder (try 'shapes-clip')")
    key, load = found
    return CaptionWordReward(cached(("video_clip", key), lambda: freeze(load())), attributes, target, temperature)


register_reward("clip_words", factory=clip_words)


class TruthReward(GroundTruthReward):
    """The ground truth as a reward: per video the share of ``attributes`` (``colour``, ``shape``,
    ``direction``, or ``all``: the three at once) that the pixels show as the prompt asks. With
    ``target`` (``{direction: down}``, what a retargeted training reward asks for) the video is
    checked against the prompt with those words instead. Not differentiable; it reads every frame
    (the motion is a line through all of them)."""

    name = "truth"
    needs_prompts = True
    frame_sampling = "all"

    def __init__(self, attributes: Sequence[str] = ATTRIBUTES, target: Mapping[str, str] | None = None) -> None:
        known = (*ATTRIBUTES, "all")
        if isinstance(attributes, str) or not attributes or any(a not in known for a in attributes):
            raise ValueError(f"truth: attributes must be a non-empty list of {', '.join(known)}; got {attributes!r}")
        for attribute, value in (target or {}).items():
            if attribute not in VALUES or value not in VALUES[attribute]:
                words = "; ".join(f"{k}: {', '.join(v)}" for k, v in VALUES.items())
                raise ValueError(f"truth: target {attribute}={value!r} is not an attribute word ({words})")
        super().__init__(attributes)
        self.target = dict(target) if target else None

    def __call__(self, frames: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        asked = [retarget(p, self.target) for p in prompts] if self.target else list(prompts)
        return super().__call__(frames, asked)


register_reward("truth", TruthReward, differentiable=False)
