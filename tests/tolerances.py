"""Float tolerances for the tests, derived from what is compared.

Two float32 computations of one value that add in different orders (another CPU's vector width
or kernels, another thread count, a batch of two against one video at a time, a checkpointed
replay) differ by rounding alone, by an amount that depends on the computation: a fixed atol
such as 1e-4 on a sum of thousands of terms passes on one CPU and fails on the next. Each test
takes its tolerance from one of the bounds here and says in a comment which one and why; where
both sides run the same ops in the same order, it compares bitwise (``torch.equal``) instead.

With ``RLR_TOLERANCE_LOG=FILE`` every check appends ``what, measured, allowed`` to FILE: the
headroom each comparison has on the machine at hand.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

EPS = torch.finfo(torch.float32).eps  # 2**-23 ~ 1.19e-7: the float32 spacing at 1 (twice the unit roundoff)
EPS64 = torch.finfo(torch.float64).eps  # 2**-52 ~ 2.2e-16: the same for Python floats and float64


def sum_atol(terms: int, magnitude: float, eps: float = EPS) -> float:
    """How far apart two float32 sums of ``terms`` numbers added in different orders can be.

    Each order is within (terms - 1) * eps/2 * sum|x| of the exact sum (Higham, *Accuracy and
    Stability of Numerical Algorithms*, 2nd ed., section 4.2), so two orders are within
    (terms - 1) * eps * sum|x|. ``magnitude`` is sum|x|, or a bound of it (for a mean: the mean of
    |x|). A rigorous worst case. ``eps=EPS64`` for sums of Python floats or float64.
    """
    return max(terms - 1, 1) * eps * magnitude


def blocked_sum_atol(terms: int, magnitude: float, eps: float = EPS) -> float:
    """``sum_atol`` for long sums that torch's CPU kernels and numpy add in blocks.

    Each number's rounding error is eps/2 times |x| times the additions it passes through
    (Higham, section 4.2): up to n - 1 in one running sum (``sum_atol``), far fewer in blocked
    sums. torch's ``cascade_sum`` (aten/src/ATen/native/cpu/SumKernel.cpp) adds into 4 levels of
    accumulators taking 2^k values each, k = max(4, ceil(log2 n) // 4), the last level the rest,
    n / 2^(3k), then its levels, rows and SIMD lanes (10 more at most); numpy's pairwise sum adds
    blocks of 128 in 8 running sums, then halves of halves (18 + log2(n / 128)). Two such sums,
    whatever their lane counts or thread splits, are within twice the longer path's eps/2 each.
    """
    n = max(int(terms), 2)
    log2 = math.ceil(math.log2(n))
    k = max(4, log2 // 4)
    path = max(3 * 2**k + math.ceil(n / 2 ** (3 * k)) + 10, 18 + max(0, log2 - 7))
    return min(path, n - 1) * eps * magnitude


def network_rtol(depth: int, fan_in: int) -> float:
    """Relative L2 difference between a network's outputs (or gradients) in two summation orders.

    Each of ``depth`` layers sums ``fan_in`` products; for terms of mixed sign their rounding
    errors add like a random walk, to about sqrt(fan_in) * eps/2 of the result. The layers'
    first-order errors add up, and each side has its own: depth * sqrt(fan_in) * eps, which is
    about sqrt(depth) times the expected difference. Not a bound for ill-conditioned steps (a norm
    over one channel, a difference of nearly equal numbers): a test meeting one says so.
    """
    return depth * math.sqrt(fan_in) * EPS


def layers(*modules: torch.nn.Module) -> tuple[int, int]:
    """(number of linear and convolution layers, their largest fan-in) in ``modules``: the count
    bounds the depth of any path through them, for ``network_rtol``."""
    found = [m for module in modules for m in module.modules() if isinstance(m, _LAYERS)]
    return len(found), max((m.weight[0].numel() for m in found), default=1)


_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
Tensors = torch.Tensor | Sequence[torch.Tensor]


def _flat(x: Tensors) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().reshape(-1).double()
    return torch.cat([t.detach().reshape(-1).double() for t in x])


def _log(what: str, measured: float, allowed: float) -> None:
    path = os.environ.get("RLR_TOLERANCE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{what}\t{measured:.3g}\t{allowed:.3g}\t{measured / allowed if allowed else float('inf'):.3g}\n")


def assert_rel_close(actual: Tensors, expected: Tensors, rtol: float, what: str) -> float:
    """``||actual - expected||_2 <= rtol * ||expected||_2`` over all elements (a tensor, or a list of
    them such as a model's gradients); the message names ``what`` was compared. Returns the
    measured relative difference."""
    a, b = _flat(actual), _flat(expected)
    assert a.shape == b.shape, f"{what}: {tuple(a.shape)} elements against {tuple(b.shape)}"
    scale = float(b.norm())
    assert scale > 0, f"{what}: the expected values are all zero, a relative difference means nothing"
    rel = float((a - b).norm()) / scale
    _log(what, rel, rtol)
    assert rel <= rtol, f"{what}: relative L2 difference {rel:.3g} > {rtol:.3g} allowed"
    return rel


def assert_max_abs(actual: Tensors, expected: Tensors, atol: float, what: str) -> float:
    """``max |actual - expected| <= atol`` elementwise; the message names ``what`` was compared.
    Returns the measured difference."""
    a, b = _flat(actual), _flat(expected)
    assert a.shape == b.shape, f"{what}: {tuple(a.shape)} elements against {tuple(b.shape)}"
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    _log(what, diff, atol)
    assert diff <= atol, f"{what}: greatest absolute difference {diff:.3g} > {atol:.3g} allowed"
    return diff
