"""Attention's activation memory: closed forms, and the kernel that decides which applies.

A trace on the meta device cannot see what attention keeps, because that depends on the kernel;
``trace`` replaces ``scaled_dot_product_attention`` with a stub and adds
``attention_saved_bytes``:

- scores materialised (PyTorch's math kernel, diffusers' classic processor):
  batch * heads * L * S for the softmax output, plus q, k and v;
  for spatial attention L = S = N = h*w tokens per frame and batch = B*F, so B*F*heads*N^2;
  for temporal attention L = S = F frames and batch = B*N, so B*N*heads*F^2;
- memory-efficient kernels (flash / efficient SDPA on CUDA, flash on CPU, cuDNN, xformers):
  q, k, v, the output and a float32 log-sum-exp per query row: linear in L and S;

using the kernel ``torch._fused_sdp_choice`` picks on the device the model runs on.
"""

from __future__ import annotations

import torch
from torch import nn


def attention_saved_bytes(
    batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, v_dim: int, itemsize: int, materialized: bool
) -> int:
    """Bytes one attention call keeps for its backward pass (``batch`` = every leading dim)."""
    qkv = batch * heads * (q_len * head_dim + kv_len * head_dim + kv_len * v_dim) * itemsize
    if materialized:  # scaled q, scaled k, v, softmax(q k^T)
        return qkv + batch * heads * q_len * kv_len * itemsize
    return qkv + batch * heads * q_len * v_dim * itemsize + batch * heads * q_len * 4  # output, fp32 LSE


def attention_scores_bytes(batch: int, heads: int, q_len: int, kv_len: int, itemsize: int) -> int:
    return batch * heads * q_len * kv_len * itemsize


_BACKENDS = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def sdpa_backend(device: torch.device | str, dtype: torch.dtype, head_dim: int) -> str:
    """The kernel ``F.scaled_dot_product_attention`` picks for a training call on ``device``
    (``"math"`` materialises the scores). Without that device here: CUDA is assumed to pick
    a memory-efficient kernel (true for fp16/bf16/fp32 with head_dim <= 256)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return "flash" if head_dim <= 256 else "math"
    if device.type == "meta":
        device = torch.device("cpu")
    try:
        q = torch.zeros(1, 2, 8, head_dim, device=device, dtype=dtype, requires_grad=True)
        return _BACKENDS.get(int(torch._fused_sdp_choice(q, q, q)), "math")
    except Exception:  # noqa: BLE001 - an unsupported dtype or device: the math kernel
        return "math"


def processors_backend(model: nn.Module) -> str | None:
    """``"xformers"`` or ``"classic"`` when the model's attention processors say so, else
    None (the processors call SDPA)."""
    names = {type(getattr(m, "processor", None)).__name__ for m in model.modules() if hasattr(m, "processor")}
    if any("XFormers" in n for n in names):
        return "xformers"
    if names & {"AttnProcessor", "AttnAddedKVProcessor"}:
        return "classic"
    return None


class AttentionBackend:
    """Whether attention materialises its scores, per head size and dtype (cached)."""

    def __init__(self, device: torch.device | str, override: str | None = None):
        self.device, self.override = torch.device(device), override
        self._cache: dict[tuple[int, torch.dtype], str] = {}

    def name(self, head_dim: int, dtype: torch.dtype) -> str:
        if self.override == "xformers":
            return "xformers"
        if self.override == "classic":
            return "math"
        if self.override in ("math", "flash", "efficient", "cudnn"):
            return self.override
        key = (head_dim, dtype)
        if key not in self._cache:
            self._cache[key] = sdpa_backend(self.device, dtype, head_dim)
        return self._cache[key]

    def materializes(self, head_dim: int, dtype: torch.dtype) -> bool:
        return self.name(head_dim, dtype) == "math"
