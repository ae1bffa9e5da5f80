"""The testbed's rewards, registered into the reward zoo as a plugin.

The zoo (``rewards/``) knows nothing of the testbed: this module registers into it through the
entry point ``testbed`` of the group ``rewards.plugins`` (pyproject.toml), which the zoo imports
the first time a reward is looked up. It adds

- ``model: shapes-clip`` (or ``local-dir:PATH`` of a frame-grid video CLIP) to the ``clip``
  reward: the shipped shapes CLIP scores a whole video;
- ``clip_words``: the shapes CLIP's probability of reading each caption word right
  (:class:`~rlr_video.testbed.clip.CaptionWordReward`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import nn

from rewards.clip import register_video_clip
from rewards.loading import cached, freeze
from rewards.registry import register_reward
from rlr_video.testbed.clip import CaptionWordReward, load_shapes_clip, video_clip_folder


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
