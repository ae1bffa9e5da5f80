"""Choosing the half-order sub-chain: where it starts (j) for a chain of T steps.

The sub-chain S = {j + h - 1, ..., j} lies in {f + 1, ..., T}, where steps 1 ... f are the
first-order (pathwise) steps; f = 1 by default.
Any distribution of j keeps RLR unbiased, because the estimate is unbiased for every j.
"""

from __future__ import annotations

import math

import torch


class StartSampler:
    """Draws j for a sub-chain of ``h`` denoiser calls.

    Args:
        mode: ``"uniform"`` over every valid j; a pair ``(a, b)`` for uniform over a..b
            (clipped to the valid range; multi-scale prompts restrict j to their third of
            the chain); ``"grad_norm"`` for a softmax over running HO gradient norms per j,
            which spends the backprop budget where the gradient is largest.
        temperature: softmax temperature for ``grad_norm``, on norms divided by their mean.
        decay: EMA decay of the running norms.
    """

    def __init__(self, mode: str | tuple[int, int] = "uniform", temperature: float = 1.0, decay: float = 0.9):
        if isinstance(mode, str) and mode not in ("uniform", "grad_norm"):
            raise ValueError(f"j={mode!r}: expected 'uniform', 'grad_norm' or a pair (a, b)")
        if not isinstance(mode, str):
            a, b = (int(v) for v in mode)
            if a > b:
                raise ValueError(f"j range {mode!r}: start {a} is after end {b}")
            mode = (a, b)
        self.mode, self.temperature, self.decay = mode, temperature, decay
        self.norms: dict[int, float] = {}

    @staticmethod
    def valid_range(num_steps: int, h: int, fo_steps: int = 1) -> tuple[int, int]:
        if h < 1 or h + fo_steps > num_steps:
            raise ValueError(
                f"h={h} does not fit a chain of {num_steps} steps with {fo_steps} first-order step(s) "
                f"(need 1 <= h <= T - fo_steps = {num_steps - fo_steps})"
            )
        return fo_steps + 1, num_steps - h + 1

    def candidates(self, num_steps: int, h: int, fo_steps: int = 1) -> list[int]:
        lo, hi = self.valid_range(num_steps, h, fo_steps)
        if isinstance(self.mode, tuple):
            a, b = max(self.mode[0], lo), min(self.mode[1], hi)
            if a > b:
                raise ValueError(f"j range {self.mode} has no valid start in {lo}..{hi} for h={h}, T={num_steps}")
            lo, hi = a, b
        return list(range(lo, hi + 1))

    def probabilities(self, num_steps: int, h: int, fo_steps: int = 1) -> tuple[list[int], torch.Tensor]:
        js = self.candidates(num_steps, h, fo_steps)
        if self.mode != "grad_norm" or not self.norms:
            return js, torch.full((len(js),), 1.0 / len(js), dtype=torch.float64)
        seen = [self.norms[j] for j in js if j in self.norms]
        scale = sum(seen) / len(seen) if seen else 1.0
        # unseen starts get the largest norm so far: every j is tried early on
        norms = torch.tensor([self.norms.get(j, max(seen, default=1.0)) for j in js], dtype=torch.float64)
        return js, torch.softmax(norms / (scale * self.temperature + 1e-12), 0)

    def draw(self, num_steps: int, h: int, generator: torch.Generator, fo_steps: int = 1) -> int:
        js, probs = self.probabilities(num_steps, h, fo_steps)
        # inverse CDF of one uniform from the caller's generator (works for CUDA generators)
        u = float(torch.rand((), generator=generator, device=generator.device))
        return js[min(int(torch.searchsorted(probs.cumsum(0), torch.tensor(u, dtype=torch.float64))), len(js) - 1)]

    def state_dict(self) -> dict[str, dict[int, float]]:
        return {"norms": dict(self.norms)}

    def load_state_dict(self, state: dict[str, dict[int, float]]) -> None:
        self.norms = dict(state["norms"])

    def observe(self, j: int, norm: float) -> None:
        """Record the HO gradient norm seen at start j (used by ``grad_norm``)."""
        if not math.isfinite(norm):
            return
        old = self.norms.get(j)
        self.norms[j] = norm if old is None else self.decay * old + (1 - self.decay) * norm
