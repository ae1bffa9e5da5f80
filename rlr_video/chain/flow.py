"""The flow-matching SDE of Flow-GRPO (Liu et al. 2025) for rectified-flow video models.

A rectified-flow model predicts the velocity v = eps - x0 at noise level sigma
(x_sigma = (1 - sigma) x0 + sigma eps). Its deterministic Euler sampler has no likelihood
ratio; the SDE below has the same marginals and Gaussian steps (docs/estimator-math.md):

    mean = x + dsigma * [v + g^2 / (2 sigma) * (x + (1 - sigma) v)],  std = g * sqrt(|dsigma|),
    g = a * sqrt(sigma / (1 - sigma))   (at sigma = 1 the denominator takes the next level below 1)

At noise level a = 0 it is exactly ``FlowMatchEulerDiscreteScheduler.step``.

Mean and std are the same formula as Flow-GRPO's ``sde_step_with_logprob`` with
``sde_type="sde"`` (yifan123/flow_grpo, ``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py``):
``prev_sample_mean = x (1 + g^2 dt / (2 sigma)) + v (1 + g^2 (1 - sigma) / (2 sigma)) dt`` and
``std = g sqrt(-dt)`` with ``g = noise_level sqrt(sigma / (1 - where(sigma == 1, sigmas[1], sigma)))``,
expanded: ``tests/test_transitions.py::test_flow_sde_matches_flow_grpo`` compares them at every
step. Only the log-prob's reduction differs: ``log_prob`` here sums over the latent elements (the
``Transition`` contract), Flow-GRPO averages them (``rlr_video.estimators.grpo`` divides).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlr_video.chain.transitions import _GaussianLogProb, _scheduler_index


class FlowSDETransition(_GaussianLogProb):
    """Flow-matching SDE step from ``sigmas[i]`` to ``sigmas[i + 1]``.

    Args:
        sigmas: the noise levels visited, descending, with the final 0 appended
            (``FlowMatchEulerDiscreteScheduler.sigmas`` after ``set_timesteps``).
        timesteps: the model's timestep for each step (``scheduler.timesteps``).
        noise_level: a in g = a * sqrt(sigma / (1 - sigma)); 0 is the Euler ODE.
    """

    def __init__(self, sigmas: Tensor, timesteps: Tensor, noise_level: float = 0.7):
        if noise_level < 0:
            raise ValueError(f"noise_level={noise_level} must be >= 0")
        self.sigmas = sigmas.detach().double().cpu()
        self.timesteps = timesteps.detach().cpu()
        self.num_steps = len(self.timesteps)
        if len(self.sigmas) != self.num_steps + 1:
            raise ValueError(f"expected {self.num_steps + 1} sigmas (with the final 0), got {len(self.sigmas)}")
        self.noise_level = float(noise_level)

    @classmethod
    def from_scheduler(cls, scheduler, num_steps: int, noise_level: float = 0.7, **set_timesteps_kwargs):
        """Build from a ``FlowMatchEulerDiscreteScheduler`` (its shift and spacing apply)."""
        scheduler.set_timesteps(num_steps, **set_timesteps_kwargs)
        return cls(scheduler.sigmas, scheduler.timesteps, noise_level)

    def timestep(self, step: int) -> Tensor:
        return self.timesteps[_scheduler_index(step, self.num_steps)]

    def _sigmas(self, step: int) -> tuple[float, float]:
        i = _scheduler_index(step, self.num_steps)
        return float(self.sigmas[i]), float(self.sigmas[i + 1])

    def _g(self, sigma: float) -> float:
        # g diverges at sigma = 1. Flow-GRPO's sde_step_with_logprob keeps sigma in the
        # numerator and puts the next level below 1 (its sigma_max) in the denominator only.
        below = sigma if sigma < 1.0 else float(self.sigmas[self.sigmas < 1.0].max())
        return self.noise_level * math.sqrt(sigma / (1 - below))

    def noise_std(self, step: int) -> float:
        sigma, sigma_next = self._sigmas(step)
        return self._g(sigma) * math.sqrt(abs(sigma_next - sigma))

    def deterministic(self) -> FlowSDETransition:
        """The same chain at noise level 0: the Euler ODE step (Flow-GRPO-Fast outside its window)."""
        return FlowSDETransition(self.sigmas, self.timesteps, 0.0)

    def sigma(self, step: int) -> float:
        """The noise level sigma of x_t at ``step`` (x_sigma = (1 - sigma) x_0 + sigma eps)."""
        return self._sigmas(step)[0]

    def add_noise(self, sample: Tensor, noise: Tensor, step: int) -> Tensor:
        """The forward process at ``step``: x_sigma = (1 - sigma) x_0 + sigma eps."""
        sigma = self.sigma(step)
        return (1 - sigma) * sample + sigma * noise

    def predict_x0(self, model_output: Tensor, step: int, latents: Tensor, clip: bool = True) -> Tensor:
        # x_sigma = x_0 + sigma * v with v = eps - x_0 (never clipped: ``clip`` is for DDIM's signature)
        return latents - self.sigma(step) * model_output

    def mean_std(self, model_output: Tensor, step: int, latents: Tensor) -> tuple[Tensor, Tensor]:
        sigma, sigma_next = self._sigmas(step)
        dsigma = sigma_next - sigma
        g2 = self._g(sigma) ** 2
        drift = model_output
        if g2 > 0:
            eps_hat = latents + (1 - sigma) * model_output
            drift = model_output + g2 / (2 * sigma) * eps_hat
        mean = latents + dsigma * drift
        std = torch.tensor(self.noise_std(step), dtype=mean.dtype, device=mean.device)
        return mean, std
