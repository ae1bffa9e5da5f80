"""Gaussian transitions x_{t-1} = mean + std * eps of the samplers rlr-video trains through.

Steps are chain indices t = T ... 1: step t maps x_t to x_{t-1} (docs/estimator-math.md). Each
transition also tells the denoiser which scheduler timestep belongs to a step, and the
noise std of a step before any model call, so estimators can check which steps carry a
likelihood ratio (a step with std 0 is deterministic and has none).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Transition(Protocol):
    num_steps: int

    def timestep(self, step: int) -> Tensor:
        """The value the denoiser is conditioned on at chain step ``step``."""

    def noise_std(self, step: int) -> float:
        """The std of the Gaussian noise injected at ``step`` (0 for a deterministic step; for a
        per-element std its smallest value, so 0 marks a step deterministic anywhere)."""

    def mean_std(self, model_output: Tensor, step: int, latents: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of x_{t-1} given x_t = ``latents`` and the denoiser output.

        The std is a scalar tensor or any tensor that broadcasts against ``latents`` (per
        sample, per element); ``noise_std`` then gives its smallest value."""

    def log_prob(self, sample: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """log N(sample; mean, std^2), summed over non-batch dims."""

    # Optional:
    # - ``predict_x0(model_output, step, latents, clip=True) -> Tensor``, the denoiser's clean
    #   estimate at x_t (the state-dependent reward baseline, DiffusionNFT's loss);
    # - ``deterministic() -> Transition``, the same chain without noise (DDIM eta 0, the flow
    #   ODE): ``rollout(stochastic=...)`` takes the other steps with it (Flow-GRPO-Fast's window);
    # - ``add_noise(sample, noise, step) -> Tensor``, the forward process q(x_t | x_0) at the
    #   step's noise level (DiffusionNFT trains on forward-noised samples).


def gaussian_log_prob(sample: Tensor, mean: Tensor, std: Tensor | float) -> Tensor:
    """Exact Gaussian log-density summed over every dim but the first (the batch).

    Computed in float32 at least: in half precision the squared residual of a
    high-dimensional video latent loses the digits that carry the score.
    """
    dtype = torch.promote_types(sample.dtype, torch.float32)
    std = torch.as_tensor(std, dtype=dtype, device=sample.device)
    if bool((std <= 0).any()):
        raise ValueError("log_prob of a deterministic step (std = 0) is undefined")
    z = (sample.to(dtype) - mean.to(dtype)) / std
    per_elem = -0.5 * z.pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return per_elem.flatten(1).sum(1)


class _GaussianLogProb:
    def log_prob(self, sample: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        return gaussian_log_prob(sample, mean, std)


def _scheduler_index(step: int, num_steps: int) -> int:
    if not 1 <= step <= num_steps:
        raise ValueError(f"step {step} is outside the chain 1..{num_steps}")
    return num_steps - step


class DDIMTransition(_GaussianLogProb):
    """DDIM with stochasticity eta (Song et al., Eq. 12/16), as ``diffusers.DDIMScheduler.step``.

    Works for any cumulative-alpha schedule (including SNR-shifted ones) and
    for epsilon-, v- and sample-prediction. eta = 1 is DDPM's ancestral sampler (fixed_small
    variance); eta = 0 is deterministic DDIM.

    Args:
        alphas_cumprod: cumulative alphas over the training timesteps.
        timesteps: the inference timesteps in the order they are visited (descending).
        eta: noise level; 0 makes every step deterministic.
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        final_alpha_cumprod: alpha-bar used after the last timestep (1.0 makes step 1
            deterministic, as with ``set_alpha_to_one=True``).
        step_ratio: the scheduler's ``num_train_timesteps // num_inference_steps``; the
            previous timestep is ``t - step_ratio``, exactly as diffusers computes it.
        clip_sample: clamp the predicted x0 to [-clip_sample, clip_sample] (None: off).
    """

    def __init__(
        self,
        alphas_cumprod: Tensor,
        timesteps: Tensor,
        eta: float = 1.0,
        prediction_type: str = "epsilon",
        final_alpha_cumprod: float = 1.0,
        step_ratio: int | None = None,
        clip_sample: float | None = None,
    ):
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type={prediction_type!r}: expected epsilon, v_prediction or sample")
        if eta < 0:
            raise ValueError(f"eta={eta} must be >= 0")
        # float32 scalars, as the diffusers schedulers compute: near zero terminal SNR the
        # term 1 - a_prev - std^2 cancels, and float64 would differ from them by ~1e-3.
        self.alphas_cumprod = alphas_cumprod.detach().float().cpu()
        self.timesteps = timesteps.detach().cpu()
        self.num_steps = len(self.timesteps)
        self.eta = float(eta)
        self.prediction_type = prediction_type
        self.final_alpha_cumprod = float(final_alpha_cumprod)
        self.step_ratio = step_ratio or len(self.alphas_cumprod) // self.num_steps
        self.clip_sample = clip_sample

    @classmethod
    def from_scheduler(cls, scheduler, num_steps: int, eta: float = 1.0, clips: bool | None = None) -> DDIMTransition:
        """Build from a diffusers DDIM-family scheduler (its config decides spacing and alphas).
        ``clips``: whether its step clips x0 (default: its config's ``clip_sample``; a scheduler
        whose step ignores that setting says so here)."""
        scheduler.set_timesteps(num_steps)
        cfg = scheduler.config
        final = getattr(scheduler, "final_alpha_cumprod", None)
        if final is None:  # schedulers without the attribute follow set_alpha_to_one
            final = 1.0 if cfg.get("set_alpha_to_one", True) else scheduler.alphas_cumprod[0]
        if cfg.get("thresholding", False):
            raise ValueError("dynamic thresholding is not supported by DDIMTransition")
        clips = cfg.get("clip_sample", False) if clips is None else clips
        return cls(
            alphas_cumprod=scheduler.alphas_cumprod,
            timesteps=scheduler.timesteps,
            eta=eta,
            prediction_type=cfg.prediction_type,
            final_alpha_cumprod=float(final),
            step_ratio=cfg.num_train_timesteps // num_steps,
            clip_sample=cfg.clip_sample_range if clips else None,
        )

    def timestep(self, step: int) -> Tensor:
        return self.timesteps[_scheduler_index(step, self.num_steps)]

    def _alphas(self, step: int) -> tuple[Tensor, Tensor]:
        t = int(self.timestep(step))
        prev = t - self.step_ratio
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else torch.tensor(self.final_alpha_cumprod)
        return a_t, a_prev

    def _std(self, step: int) -> Tensor:
        a_t, a_prev = self._alphas(step)
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        return self.eta * variance.clamp(min=0).sqrt()

    def noise_std(self, step: int) -> float:
        return float(self._std(step))

    def deterministic(self) -> DDIMTransition:
        """The same schedule at eta = 0: deterministic DDIM."""
        return DDIMTransition(
            self.alphas_cumprod,
            self.timesteps,
            0.0,
            self.prediction_type,
            self.final_alpha_cumprod,
            self.step_ratio,
            self.clip_sample,
        )

    def add_noise(self, sample: Tensor, noise: Tensor, step: int) -> Tensor:
        """q(x_t | x_0) at the step's timestep: sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps
        (``DDIMScheduler.add_noise``)."""
        a_t, _ = self._alphas(step)
        return float(a_t.sqrt()) * sample + float((1 - a_t).sqrt()) * noise

    def predict_x0_eps(
        self, model_output: Tensor, step: int, latents: Tensor, clip: bool = True
    ) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps_hat) from the model output; ``clip=False`` leaves x0_hat unclipped (it
        is then affine in the output, whatever ``clip_sample`` says)."""
        a_t, _ = self._alphas(step)
        sa, sb = float(a_t.sqrt()), float((1 - a_t).sqrt())
        if self.prediction_type == "epsilon":
            x0, eps = (latents - sb * model_output) / sa, model_output
        elif self.prediction_type == "v_prediction":
            x0, eps = sa * latents - sb * model_output, sa * model_output + sb * latents
        else:
            x0, eps = model_output, (latents - sa * model_output) / sb
        if clip and self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
        return x0, eps

    def predict_x0(self, model_output: Tensor, step: int, latents: Tensor, clip: bool = True) -> Tensor:
        return self.predict_x0_eps(model_output, step, latents, clip)[0]

    def mean_std(self, model_output: Tensor, step: int, latents: Tensor) -> tuple[Tensor, Tensor]:
        _, a_prev = self._alphas(step)
        std = self._std(step)
        x0, eps = self.predict_x0_eps(model_output, step, latents)
        direction = float((1 - a_prev - std**2).clamp(min=0).sqrt())
        mean = float(a_prev.sqrt()) * x0 + direction * eps
        return mean, std.to(mean.dtype).to(mean.device)


class DDPMTransition(_GaussianLogProb):
    """DDPM ancestral sampling with the posterior q(x_{t-1} | x_t, x0_hat), "fixed_small" variance.

    Matches ``diffusers.DDPMScheduler.step`` (epsilon- or v-prediction) for any number of
    inference steps; the last step (previous timestep < 0) adds no noise, as in diffusers.
    """

    def __init__(self, scheduler, num_steps: int):
        cfg = scheduler.config
        if cfg.variance_type not in ("fixed_small", "fixed_small_log"):
            raise ValueError(f"variance_type={cfg.variance_type!r}: only fixed_small is supported")
        scheduler.set_timesteps(num_steps)
        # DDIM at eta = 1 has exactly the DDPM posterior variance, and after the last
        # timestep alpha-bar is 1, so step 1 is noise-free as in diffusers.
        self.ddim = DDIMTransition(
            scheduler.alphas_cumprod,
            scheduler.timesteps,
            eta=1.0,
            prediction_type=cfg.prediction_type,
            final_alpha_cumprod=1.0,
            step_ratio=cfg.num_train_timesteps // num_steps,
            clip_sample=cfg.clip_sample_range if cfg.clip_sample else None,
        )
        self.num_steps = num_steps

    def timestep(self, step: int) -> Tensor:
        return self.ddim.timestep(step)

    def noise_std(self, step: int) -> float:
        return self.ddim.noise_std(step)

    def predict_x0(self, model_output: Tensor, step: int, latents: Tensor, clip: bool = True) -> Tensor:
        return self.ddim.predict_x0(model_output, step, latents, clip)

    def deterministic(self) -> DDIMTransition:
        """Deterministic DDIM on the same schedule (the DDPM posterior has no noise-free form)."""
        return self.ddim.deterministic()

    def add_noise(self, sample: Tensor, noise: Tensor, step: int) -> Tensor:
        return self.ddim.add_noise(sample, noise, step)

    def mean_std(self, model_output: Tensor, step: int, latents: Tensor) -> tuple[Tensor, Tensor]:
        a_t, a_prev = (float(a) for a in self.ddim._alphas(step))
        x0, _ = self.ddim.predict_x0_eps(model_output, step, latents)
        alpha = a_t / a_prev
        mean = (math.sqrt(a_prev) * (1 - alpha) * x0 + math.sqrt(alpha) * (1 - a_prev) * latents) / (1 - a_t)
        return mean, torch.tensor(self.noise_std(step), dtype=mean.dtype, device=mean.device)
