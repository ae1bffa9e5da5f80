"""What a reward is: a callable from decoded frames and prompts to one score per video."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Reward(Protocol):
    """``frames`` is (B, F, 3, H, W) with floats in [0, 1]; the result is (B,).

    ``differentiable`` says whether gradients flow from the score to the frames
    (first-order estimators need it; likelihood-ratio ones do not).

    Rewards may also say ``needs_prompts = False`` (aesthetic, temporal, flicker) so that
    callers such as ``rlr-video reward`` do not ask for prompts; it is optional and defaults
    to True. Build rewards by name with :func:`rewards.build_reward`.

    A plain function ``fn(frames, prompts) -> (B,)`` is a reward too: the estimators, the
    trainer and ``build_reward`` wrap it with :func:`rewards.as_reward` (named by its
    ``__name__``, ``differentiable=True``: assumed to be torch operations gradients flow through).
    """

    name: str
    differentiable: bool

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor: ...
