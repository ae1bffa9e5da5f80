"""Block-level gradient checkpointing for denoisers diffusers gives none (UNet3D).

``UNet3DConditionModel.enable_gradient_checkpointing()`` raises in diffusers. Wrapping each
down/mid/up block's ``forward`` in ``torch.utils.checkpoint`` (non-reentrant, so frozen
inputs and keyword arguments work and the RNG state is replayed) stores only the blocks'
inputs in the forward pass and recomputes their insides in the backward pass: the same
gradients, less activation memory. It acts only while gradients are recorded, so sampling
without grad runs the plain forward.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_FLAG = "_rlr_checkpointed"


def denoiser_blocks(model: nn.Module) -> list[nn.Module]:
    """The down, mid and up blocks of a UNet (whatever of them it has)."""
    blocks = list(getattr(model, "down_blocks", []))
    if getattr(model, "mid_block", None) is not None:
        blocks.append(model.mid_block)
    return blocks + list(getattr(model, "up_blocks", []))


def _checkpointed_forward(block: nn.Module, forward):
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        if getattr(block, _FLAG, False) and torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return wrapped


def set_block_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Turn block-level checkpointing of ``model`` on or off; returns the number of blocks.

    The wrapper is installed once per block (an instance attribute shadowing the class's
    ``forward``) and then only switched, so calling this repeatedly is cheap and safe.
    """
    blocks = denoiser_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no down/mid/up blocks to checkpoint")
    for block in blocks:
        if not hasattr(block, _FLAG):
            block.forward = _checkpointed_forward(block, block.forward)
        setattr(block, _FLAG, enabled)
    return len(blocks)
