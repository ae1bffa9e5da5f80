"""Parameter perturbations theta + s * u_t for the zeroth-order (``param_es``) part of RLR.

Each perturbed step t gets its own direction u_t ~ N(0, I) over the trainable parameters,
regenerated from a stored seed when the estimate is formed, so no copy of u_t is kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor


class ParamPerturbation:
    def __init__(self, params: Sequence[torch.nn.Parameter], sigma: float, seeds: dict[int, int]):
        if sigma <= 0:
            raise ValueError(f"es_sigma={sigma} must be > 0")
        self.params, self.sigma, self.seeds = list(params), sigma, seeds

    def direction(self, step: int) -> list[Tensor]:
        g = torch.Generator().manual_seed(self.seeds[step])
        return [torch.randn(p.shape, generator=g).to(p.device, p.dtype) for p in self.params]

    @contextmanager
    def at(self, step: int) -> Iterator[None]:
        """Run the enclosed denoiser call at theta + sigma * u_step (if ``step`` is perturbed).

        The parameters are restored by copy, not by subtracting, so they come back bit-exact.
        """
        if step not in self.seeds:
            yield
            return
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, u in zip(self.params, self.direction(step)):
                p.add_(u, alpha=self.sigma)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)
