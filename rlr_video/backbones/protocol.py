"""The one interface every video model implements to be trained by rlr-video."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from rlr_video.chain.transitions import Transition

Conditioning = Any  # whatever the backbone's ``predict`` needs; opaque to estimators


@runtime_checkable
class VideoBackbone(Protocol):
    """A text-to-video model seen as a Gaussian chain.

    ``predict`` applies classifier-free guidance itself; ``decode`` returns frames
    (B, F, 3, H, W) in [0, 1]. Steps are chain indices T ... 1 (see ``rlr_video.chain``).
    """

    transition: Transition
    num_steps: int

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...

    def encode(self, prompts: Sequence[str]) -> Conditioning: ...

    def initial_latents(self, batch_size: int, generator: torch.Generator) -> Tensor: ...

    def predict(self, latents: Tensor, step: int, cond: Conditioning) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...

    # Optional: ``base_model()``, a context manager inside which ``predict`` computes the model
    # without its fine-tuned weights (the LoRA disabled, the weights untouched): the reference
    # policy of a KL penalty (the estimators with a KL term to the base model).
