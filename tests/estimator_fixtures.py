"""Chains whose gradient is known, and helpers to average estimators over many draws."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rlr_video.chain import draw_noise, gaussian_log_prob

# These models are tiny: extra threads only add synchronisation (and contend with other
# test processes on a 2-core machine).
torch.set_num_threads(1)


class MeanTransition:
    """A transition whose "model output" is the mean itself, with fixed per-step stds: a
    float, or a vector with one std per latent dimension (the per-element std contract)."""

    def __init__(self, stds: list[float] | list[list[float]]):
        self.stds = [torch.as_tensor(s, dtype=torch.float32) for s in stds]  # stds[t - 1]: step t
        self.num_steps = len(stds)

    def timestep(self, step: int) -> Tensor:
        return torch.tensor(step)

    def noise_std(self, step: int) -> float:
        return float(self.stds[step - 1].min())

    def mean_std(self, model_output: Tensor, step: int, latents: Tensor) -> tuple[Tensor, Tensor]:
        return model_output, self.stds[step - 1]

    def predict_x0(self, model_output: Tensor, step: int, latents: Tensor) -> Tensor:
        # Any function of x_t will do for the state baseline's unbiasedness: the next mean.
        return model_output

    def log_prob(self, sample: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        return gaussian_log_prob(sample, mean, std)


class LinearGaussianBackbone(nn.Module):
    """x_{t-1} = a_t x_t + b_t + s_t eps with x_T ~ N(0, I) in 3 dims ("one RGB pixel").

    With the quadratic reward R = -||x_0 - c||^2 the objective has a closed form:
    x_0 ~ N(m_0, v_0 I) with m_{t-1} = a_t m_t + b_t, v_{t-1} = a_t^2 v_t + s_t^2,
    so J = -(||m_0 - c||^2 + 3 v_0).
    """

    dim = 3

    def __init__(self, stds: list[float] | list[list[float]], seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        T = len(stds)
        self.a = nn.Parameter(0.8 + 0.2 * torch.rand(T, generator=g))
        self.b = nn.Parameter(0.3 * torch.randn(T, self.dim, generator=g))
        self.transition = MeanTransition(stds)
        self.num_steps = T

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.a, self.b]

    def encode(self, prompts):
        return None

    def initial_latents(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return draw_noise(torch.empty(batch_size, self.dim), generator)

    def predict(self, latents: Tensor, step: int, cond) -> Tensor:
        return self.a[step - 1] * latents + self.b[step - 1]

    def decode(self, latents: Tensor) -> Tensor:
        return latents.reshape(-1, 1, self.dim, 1, 1)

    def exact_objective(self, target: Tensor) -> Tensor:
        m, v = torch.zeros(self.dim), torch.ones(self.dim)  # per-dimension mean and variance
        for step in range(self.num_steps, 0, -1):
            a, s = self.a[step - 1], self.transition.stds[step - 1]
            m, v = a * m + self.b[step - 1], a**2 * v + s**2
        return -((m - target).pow(2).sum() + v.sum())


class QuadraticReward:
    name, differentiable = "quadratic", True

    def __init__(self, target: Tensor):
        self.target = target

    def __call__(self, frames: Tensor, prompts) -> Tensor:
        return -(frames - self.target.reshape(1, 1, -1, 1, 1)).pow(2).flatten(1).sum(1)


class DistanceReward:
    """A smooth, nonlinear reward on decoded frames for the neural backbone."""

    name, differentiable = "distance", True

    def __call__(self, frames: Tensor, prompts) -> Tensor:
        red, blue = frames[:, :, 0], frames[:, :, 2]
        return -(red - 0.8).pow(2).flatten(1).mean(1) - (blue - 0.2).pow(2).flatten(1).mean(1)


def flat_grad(params) -> Tensor:
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in params])


def draws(estimator, backbone, reward, n: int, batch: int, seed: int, prompts=None) -> Tensor:
    """``n`` independent estimates of -grad J (one per call), as rows of a matrix."""
    params = backbone.trainable_parameters()
    prompts = prompts or ["a red square moving up"] * batch
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        for p in params:
            p.grad = None
        estimator.estimate(backbone, reward, prompts, generator)
        rows.append(flat_grad(params))
    return -torch.stack(rows).double()  # estimates of +grad J


def z_scores(samples: Tensor, truth: Tensor, truth_se: Tensor | float = 0.0) -> Tensor:
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(len(samples))
    return (mean - truth) / torch.sqrt(se**2 + torch.as_tensor(truth_se) ** 2)
