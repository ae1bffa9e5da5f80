"""What the trainer needs from a process group, beyond accelerate.

Estimators compute gradients with ``torch.autograd.grad``, so DDP's backward hooks never fire:
the trainer sums ``p.grad`` across processes itself (``all_reduce_sum``). Randomness is
derived from the run seed and the *global* index of a micro-batch (``rlr_video.seeds``), never
from a process's rank or history, so a run is the same with 1 or N processes (for the same
micro-batch size and global batch) and a resumed run continues exactly.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum each tensor over all processes, in place (one flat buffer, one collective)."""
    if not is_distributed() or torch.distributed.get_world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every process, in rank order (a one-element list without a group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Make every process start from rank 0's trainable weights (LoRA init may be random)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for p in params:
            torch.distributed.broadcast(p.data, src=0)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
