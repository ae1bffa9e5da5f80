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
    """

    name: str
    differentiable: bool

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor: ...
