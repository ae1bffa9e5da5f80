"""Pieces every estimator shares: reward baselines, per-part gradient accumulation, and
counting denoiser calls."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rlr_video.chain import predict

BASELINES = ("loo", "group", "running", "none")


class RewardBaseline:
    """Turns rewards R into advantages A = R - b with b independent of each sample's own draw,
    so every likelihood-ratio term stays unbiased.

    - ``loo``: batch leave-one-out mean (b_i = mean of the other samples; 0 for a batch of 1).
    - ``group``: leave-one-out within each prompt's group (b_i = mean of the *other* videos of
      the same prompt, as GRPO-style trainers do with ``train.group_size`` videos per prompt):
      it removes the prompt's own difficulty from the advantage. A prompt alone in the batch
      falls back to the batch leave-one-out. Unbiased: b_i never uses sample i's draw.
    - ``running``: per-prompt running mean of earlier updates (prompts seen for the first
      time fall back to leave-one-out); updated after the advantages are taken.
    - ``none``: b = 0.

    ``normalize`` divides by the batch std: lower variance, but no longer unbiased, so it
    is off by default.
    """

    def __init__(self, kind: str = "loo", normalize: bool = False, decay: float = 0.9):
        if kind not in BASELINES:
            raise ValueError(f"baseline={kind!r}: expected one of {BASELINES}")
        self.kind, self.normalize, self.decay = kind, normalize, decay
        self.running: dict[str, float] = {}

    def __call__(self, rewards: Tensor, prompts: Sequence[str], values: Tensor | None = None) -> Tensor:
        """Advantages of ``rewards``.

        ``values`` (b(x_t) per video, see ``state_values``) adds a state-dependent control
        variate: video i's reward becomes R_i - c_i b_i, with c_i the least-squares slope of R
        on b over the *other* videos of the batch, kept in [0, 1] (so a useless b gets c ~ 0
        rather than adding its noise), and the baseline above is taken of those residuals. c_i and the others'
        residuals never use video i's draw, so the advantage stays unbiased. Needs ``loo`` or
        ``group``.
        """
        r = rewards.detach().float()
        if values is not None:
            return self._with_values(r, values.detach().float(), prompts)
        b = torch.zeros_like(r)
        n = len(r)
        if self.kind != "none" and n > 1:
            b = (r.sum() - r) / (n - 1)
        if self.kind == "group":
            for i, p in enumerate(prompts):
                others = [j for j, q in enumerate(prompts) if q == p and j != i]
                if others:
                    b[i] = r[others].mean()
        if self.kind == "running":
            for i, p in enumerate(prompts):
                if p in self.running:
                    b[i] = self.running[p]
            for i, p in enumerate(prompts):
                old = self.running.get(p)
                self.running[p] = float(r[i]) if old is None else self.decay * old + (1 - self.decay) * float(r[i])
        return self._normalized(r - b, r)

    def _normalized(self, advantages: Tensor, r: Tensor) -> Tensor:
        if self.normalize and len(r) > 1:
            advantages = advantages / (r.std() + 1e-8)
        return advantages

    def _with_values(self, r: Tensor, v: Tensor, prompts: Sequence[str]) -> Tensor:
        if self.kind not in ("loo", "group"):
            raise ValueError(f"a state-dependent baseline needs baseline loo or group, not {self.kind!r}")
        n = len(r)
        if n < 3:  # a slope needs two other videos
            raise ValueError(f"a state-dependent baseline needs at least 3 videos per batch, got {n}")
        others = ~torch.eye(n, dtype=torch.bool)
        if self.kind == "group":
            same = torch.tensor([[p == q for q in prompts] for p in prompts])
            centre = others & same
            centre[centre.sum(1) == 0] = others[centre.sum(1) == 0]  # a prompt alone: the batch
        else:
            centre = others
        w = others.float() / (n - 1)  # row i: the mean over the other videos
        r_dev = r - (w @ r)[:, None]  # [i, j]: R_j minus the mean over j != i
        v_dev = v - (w @ v)[:, None]
        var = (others * v_dev.pow(2)).sum(1)
        slope = torch.where(var > 1e-12, (others * r_dev * v_dev).sum(1) / var.clamp_min(1e-12), 0.0)
        # In [0, 1]: b is a prediction of R, never amplified. Without the cap one video whose b
        # stands apart from the others' makes their fitted slope explode (6x seen on the testbed).
        slope = slope.clamp(0.0, 1.0)
        residual = r[None, :] - slope[:, None] * v[None, :]  # [i, j]: R_j - c_i b_j
        own = residual.diagonal()
        offset = (centre * residual).sum(1) / centre.sum(1)
        return self._normalized(own - offset, r)


class GradPart:
    """Gradients of one part of an estimate (FO, HO or ZO), kept apart until ``flush`` so
    each part's norm can be reported; ``add`` may be called once per loss term, which lets
    the graph of each term be freed before the next one is built."""

    def __init__(self, params: Sequence[torch.nn.Parameter]):
        self.params = list(params)
        self.grads: list[Tensor | None] = [None] * len(self.params)

    def add(self, loss: Tensor) -> None:
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for i, g in enumerate(grads):
            if g is not None:
                self.grads[i] = g if self.grads[i] is None else self.grads[i] + g

    def add_tensors(self, tensors: Sequence[Tensor], scale: float) -> None:
        for i, t in enumerate(tensors):
            g = t * scale
            self.grads[i] = g if self.grads[i] is None else self.grads[i] + g

    def norm(self) -> float:
        sq = sum(float(g.double().pow(2).sum()) for g in self.grads if g is not None)
        return math.sqrt(sq)

    def flush(self) -> float:
        """Add the accumulated gradients into ``p.grad``; returns this part's norm."""
        for p, g in zip(self.params, self.grads):
            if g is not None:
                g = g.to(p.dtype)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.add_(g)
        return self.norm()


@dataclass
class CallCount:
    """Denoiser calls of one update: forward-only and forward-with-backward."""

    forward: int = 0
    backward: int = 0

    @property
    def equivalents(self) -> int:
        """Compute in forward-call equivalents (a backward costs about two forwards)."""
        return self.forward + 2 * self.backward


def check_prompts(prompts: Sequence[str]) -> None:
    """One prompt per video: a bare string would be a batch of its characters."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts) or not prompts:
        raise TypeError(f"prompts: expected a non-empty list of strings, one per video; got {prompts!r:.80}")


def score(reward, frames: Tensor, prompts: Sequence[str]) -> Tensor:
    """``reward(frames, prompts)``, checked to be one score per video: a (B, 1) or (B, F) output
    would broadcast against (B,) advantages and silently give a wrong gradient."""
    rewards = reward(frames, prompts)
    if not isinstance(rewards, Tensor) or tuple(rewards.shape) != (len(prompts),):
        got = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
        name = getattr(reward, "name", type(reward).__name__)
        want = f"one score per video, shape ({len(prompts)},)"
        raise ValueError(f"reward {name!r} returned {got}; a reward returns {want}")
    return rewards


def grad_norm(params: Sequence[torch.nn.Parameter]) -> float:
    sq = sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None)
    return math.sqrt(sq)


def skipped_stats(rewards: Tensor) -> dict[str, float]:
    """Diagnostics of an update skipped because a reward was NaN or infinite."""
    finite = rewards[torch.isfinite(rewards)]
    return {
        "skipped": 1.0,
        "reward_mean": float(finite.mean()) if len(finite) else float("nan"),
        "nonfinite_rewards": float((~torch.isfinite(rewards)).sum()),
    }


def reward_stats(rewards: Tensor) -> dict[str, float]:
    r = rewards.detach().float()
    return {
        "skipped": 0.0,
        "reward_mean": float(r.mean()),
        "reward_std": float(r.std()) if len(r) > 1 else 0.0,
    }


def step_log_prob(backbone, cond, traj, step: int, latents: Tensor | None = None, checkpoint: bool = False) -> Tensor:
    """log N(x_{t-1}; mean_theta(x_t, t), std_t^2) at a stored transition.

    x_t is the stored latent (detached: gradients reach the parameters only) unless
    ``latents`` gives a replayed one; the stored x_{t-1} is always detached.
    """
    x_t = traj.latents[step].detach() if latents is None else latents
    output = predict(backbone, x_t, step, cond, checkpoint)
    mean, std = backbone.transition.mean_std(output, step, x_t)
    return backbone.transition.log_prob(traj.latents[step - 1].detach(), mean, std)


def state_values(backbone, reward, traj, steps: Sequence[int], prompts: Sequence[str]) -> dict[int, Tensor]:
    """b_t(x_t) = R(decode(x0_hat(x_t))) for each step t in ``steps``: the reward of the
    denoiser's clean estimate at the stored x_t (``rollout(..., keep_x0=True)``), no gradient.

    It depends on x_t only, never on the noise eps_t that step t's likelihood ratio scores,
    so subtracting it keeps that term unbiased; it removes the part of R that x_t already
    decides, which is most of it in the low-noise steps whose ratios have the largest
    variance. One decode and one reward call per step, no denoiser call. A non-finite value
    falls back to 0 (no state baseline for that video).
    """
    if "x0" not in traj.extras:
        raise ValueError("state_values needs a rollout with keep_x0=True")
    values = {}
    with torch.no_grad():
        for t in steps:
            v = score(reward, backbone.decode(traj.extras["x0"][t]), prompts).detach().float()
            values[t] = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
    return values


def require_x0(transition) -> None:
    """The state baseline needs the transition's clean estimate: say so before any sampling."""
    if not callable(getattr(transition, "predict_x0", None)):
        raise ValueError(
            f"state_baseline needs transition.predict_x0(model_output, step, latents); "
            f"{type(transition).__name__} has none"
        )


def require_noise(transition, steps, why: str) -> None:
    """Likelihood-ratio terms need noise: name the deterministic steps if there are any."""
    silent = [t for t in steps if transition.noise_std(t) <= 0]
    if silent:
        raise ValueError(
            f"{why} needs stochastic steps, but steps {silent} have noise std 0; "
            "use eta > 0 (DDIM) or a flow noise_level > 0"
        )


def randint(generator: torch.Generator, high: int) -> int:
    """A uniform integer in [0, high) from the caller's generator (CPU or CUDA)."""
    return int(torch.randint(high, (), generator=generator, device=generator.device))
