"""The Recursive Likelihood Ratio estimator (arXiv 2502.00639), as in docs/estimator-math.md.

One update splits the chain's steps three ways and gives each step exactly one estimator:

- FO, step 1 (or the last ``fo_steps`` steps): pathwise gradient through those denoiser
  calls, the decoder and the reward.
- HO, steps j+h-1 ... j: the sub-chain is replayed from the stored x_{j+h-1} with the stored
  noises (so gradients flow through its h calls), and the likelihood ratio of its last
  transition carries the reward: A * grad log N(x_{j-1}; m_theta, sigma_j^2).
- ZO, every other step: ``latent_lr`` (likelihood ratio on ``zo_samples`` sampled
  steps, reweighted to stay unbiased), ``param_es`` (Gaussian parameter perturbation,
  forward passes only) or ``none`` (drop them: biased, the paper's "w/o ZO" ablation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor

from rewards import as_reward
from rlr_video.chain import replay, rollout
from rlr_video.errors import ConfigError
from rlr_video.estimators.common import (
    AdvantageConfig,
    CallCount,
    GradPart,
    RewardBaseline,
    all_finite,
    centred,
    check_prompts,
    check_state_baseline,
    finished,
    grad_norm,
    randint,
    require_noise,
    require_x0,
    score,
    skipped,
    state_values,
    step_log_prob,
)
from rlr_video.estimators.perturb import ParamPerturbation
from rlr_video.estimators.registry import BaseEstimator, Estimate, RunContext, bounds, register_estimator
from rlr_video.estimators.split import StartSampler
from rlr_video.memory.planner import ZO_MODES
from rlr_video.prompts import stage_j_range


@dataclass
class RLRConfig(AdvantageConfig):
    """``estimator.name: rlr``: the Recursive Likelihood Ratio estimator (see ``RLR``)."""

    name: str = "rlr"
    # denoiser calls of the half-order sub-chain; 0 drops HO (its steps go to ZO: the paper's
    # "w/o HO" ablation, still unbiased with zo: latent_lr). memory.budget replaces it.
    h: int = field(default=2, metadata=bounds(0))
    # the last steps taken pathwise (1 in the paper). Their LR terms would have the smallest
    # noise std and so the largest variance; backprop through them is cheap there.
    fo_steps: int = field(default=1, metadata=bounds(1))
    zo: Literal[ZO_MODES] = "latent_lr"  # latent_lr, param_es or none: see RLR
    # latent_lr: ZO steps sampled per update (null: all). More than the steps that h and fo_steps
    # leave means all of them, so changing h (or a memory plan) needs no change here.
    zo_samples: int | None = field(default=None, metadata=bounds(1))
    # where the sub-chain starts: uniform, grad_norm (softmax over running HO gradient norms)
    # or [a, b]; running statistics of grad_norm are kept per process (saved in checkpoints)
    j: Literal["uniform", "grad_norm"] | list[int] = "uniform"
    es_sigma: float = field(default=1e-3, metadata=bounds(0.0))  # param_es: perturbation scale

    planned: ClassVar[bool] = True  # memory.budget: the planner picks h, checkpointing and the ZO mode
    accepts_stages: ClassVar[bool] = True  # prompts.ho_stage: the sub-chain starts in that third

    def validate(self, run: RunContext) -> None:
        super().validate(run)
        T, fo = run.num_steps, self.fo_steps
        if self.h > T - fo:
            raise ConfigError("estimator.h", self.h, f"0 ... {T - fo} (model.num_steps - fo_steps: those are FO)")
        if isinstance(self.j, list):
            lo, hi = fo + 1, T - self.h + 1
            if len(self.j) != 2 or not lo <= self.j[0] <= self.j[1] <= hi:
                raise ConfigError("estimator.j", self.j, f"uniform, grad_norm or [a, b] with {lo} <= a <= b <= {hi}")
        if self.zo == "param_es" and self.es_sigma <= 0:
            raise ConfigError("estimator.es_sigma", self.es_sigma, "numbers > 0 with zo: param_es")
        if run.ho_stage is not None:
            if self.j != "uniform":
                raise ConfigError("estimator.j", self.j, "uniform when prompts.ho_stage picks the range")
            if stage_j_range(T, self.h, run.ho_stage, fo) is None:
                allowed = f"a third of the {T} steps that fits h={self.h} above the fo_steps"
                raise ConfigError("prompts.ho_stage", run.ho_stage, allowed)

    def build(self, run: RunContext) -> RLR:
        j: str | tuple[int, int] = tuple(self.j) if isinstance(self.j, list) else self.j
        if run.ho_stage is not None:  # multi-scale prompts: HO starts in that stage's third
            j = stage_j_range(run.num_steps, self.h, run.ho_stage, self.fo_steps)
        return RLR(
            h=self.h,
            fo_steps=self.fo_steps,
            zo=self.zo,
            zo_samples=self.zo_samples,
            j=j,
            baseline=self.baseline,
            normalize=self.normalize,
            es_sigma=self.es_sigma,
            state_baseline=self.state_baseline,
        )


@register_estimator("rlr", RLRConfig)
class RLR(BaseEstimator):
    """Recursive Likelihood Ratio gradient estimator.

    Args:
        h: denoiser calls in the half-order sub-chain (more: lower variance, more memory);
            0 drops HO, so ZO covers every step above the FO ones (the paper's "w/o HO").
        fo_steps: the last steps covered by backprop (1 in the paper). A pathwise term has a
            far smaller variance than a likelihood ratio over the same step, so a few more
            of them here is the cheapest variance reduction that memory allows; it makes RLR
            unbiased truncated backprop: the truncated steps are AlignProp / VADER's, and
            HO + ZO remove their bias.
        zo: how the remaining steps are covered: ``latent_lr`` (default; exact, unbiased),
            ``param_es`` (the paper's perturbation; unbiased for the smoothed objective) or
            ``none`` (biased ablation).
        zo_samples: ``latent_lr`` steps sampled per update (None: all of them). Each costs
            one denoiser call with backward; the sampled terms are weighted |C| / m.
        j: where the sub-chain starts: ``"uniform"``, ``(a, b)`` or ``"grad_norm"``.
        baseline: reward baseline for the likelihood-ratio terms (see ``RewardBaseline``).
        normalize: divide advantages by the batch std (biased; off by default).
        state_baseline: a state-dependent control variate in each likelihood-ratio term of
            step t: the reward of the denoiser's clean estimate x0_hat(x_t) (``state_values``),
            scaled by its slope on the other videos (``RewardBaseline``). Unbiased (it depends
            on x_t, not on the scored noise eps_t); one decode and reward call per scored step,
            no denoiser call. Needs ``baseline`` loo or group and 3 or more videos.
        es_sigma: perturbation scale s of ``param_es``.
        checkpoint_calls: recompute each denoiser call of the FO and HO replays in the backward
            pass (``torch.utils.checkpoint``): the h calls keep their input latents instead of
            their activations. Same gradients; about one more forward per call. The memory
            planner (``rlr_video.memory``) sets it.
    """

    def __init__(
        self,
        h: int = 2,
        zo: str = "latent_lr",
        fo_steps: int = 1,
        zo_samples: int | None = None,
        j: str | tuple[int, int] = "uniform",
        baseline: str = "loo",
        normalize: bool = False,
        es_sigma: float = 1e-3,
        j_temperature: float = 1.0,
        checkpoint_calls: bool = False,
        state_baseline: bool = False,
    ):
        if zo not in ZO_MODES:
            raise ValueError(f"zo={zo!r}: expected one of {ZO_MODES}")
        if h < 0:
            raise ValueError(f"h={h} must be >= 0 (0: no half-order term)")
        if fo_steps < 1:
            raise ValueError(f"fo_steps={fo_steps} must be >= 1")
        if zo_samples is not None and zo_samples < 1:
            raise ValueError(f"zo_samples={zo_samples} must be >= 1 (or None for all steps)")
        self.h, self.zo, self.fo_steps, self.zo_samples, self.es_sigma = h, zo, fo_steps, zo_samples, es_sigma
        self.checkpoint_calls = checkpoint_calls
        self.start = StartSampler(j, temperature=j_temperature)
        self.baseline = RewardBaseline(baseline, normalize)
        if state_baseline:
            check_state_baseline(baseline)
        self.state_baseline = state_baseline
        # param_es shares one perturbation across the batch, so its baseline must not use
        # this batch at all: a running mean of earlier batches' rewards.
        self.es_baseline: float | None = None

    def estimate(
        self, backbone, reward, prompts: Sequence[str], generator: torch.Generator, reward_offset: Tensor | None = None
    ) -> Estimate:
        check_prompts(prompts)
        params = backbone.trainable_parameters()
        T, transition, batch = backbone.num_steps, backbone.transition, len(prompts)
        reward = as_reward(reward)  # a plain function: assumed differentiable
        if not reward.differentiable:
            raise ValueError(f"RLR's first-order step needs a differentiable reward; {reward.name!r} is not")
        j = self.start.draw(T, self.h, generator, self.fo_steps) if self.h else 0
        sub_chain = range(j, j + self.h)
        rest = [t for t in range(self.fo_steps + 1, T + 1) if t not in sub_chain]
        if self.h:
            require_noise(transition, [j], "the half-order term")
        if self.zo == "latent_lr":
            require_noise(transition, rest, "zo='latent_lr'")
        if self.state_baseline:
            require_x0(transition)
        calls = CallCount()

        with torch.no_grad():
            cond = backbone.encode(prompts)
        perturb = None
        if self.zo == "param_es":
            seeds = {t: randint(generator, 2**62) for t in rest}
            perturb = ParamPerturbation(params, self.es_sigma, seeds)
        traj = rollout(
            backbone, cond, generator, batch, step_context=perturb.at if perturb else None, keep_x0=self.state_baseline
        )
        if perturb is not None:
            traj.extras["zo_seeds"] = perturb.seeds  # regenerate u_t without storing it
        calls.forward += T

        # FO: the last steps replayed with gradients through decoder and reward.
        fo = GradPart(params)
        with torch.enable_grad():
            x0 = replay(backbone, cond, traj, self.fo_steps, 0, self.checkpoint_calls)
            raw, terms = score(reward, backbone.decode(x0), prompts)
            calls.forward += self.fo_steps
            if not all_finite(raw):
                return skipped(raw, terms)
            rewards = centred(raw, reward_offset)  # the same gradient as raw's: a constant apart
            fo.add(-rewards.mean())
            calls.backward += self.fo_steps
        zo_steps: list[int] = []
        if self.zo == "latent_lr" and rest:
            m = len(rest) if self.zo_samples is None else min(self.zo_samples, len(rest))
            picked = torch.randperm(len(rest), generator=generator, device=generator.device)[:m]
            zo_steps = sorted((rest[int(i)] for i in picked), reverse=True)
        scored = ([j] if self.h else []) + zo_steps  # the steps whose likelihood ratio carries A
        if self.state_baseline:
            values = state_values(backbone, reward, traj, scored, prompts, reward_offset)
            advantages = {t: self.baseline(rewards, prompts, values[t]) for t in scored}
        else:
            advantages = dict.fromkeys(scored, self.baseline(rewards, prompts))

        # HO: replay the sub-chain, likelihood ratio of its last transition.
        ho = GradPart(params)
        if self.h:
            with torch.enable_grad():
                x_j = replay(backbone, cond, traj, j + self.h - 1, j, self.checkpoint_calls)
                log_prob = step_log_prob(backbone, cond, traj, j, latents=x_j, checkpoint=self.checkpoint_calls)
                ho.add(-(advantages[j] * log_prob).mean())
            calls.forward += self.h
            calls.backward += self.h

        zo = GradPart(params)
        if zo_steps:
            weight = len(rest) / len(zo_steps)
            for t in zo_steps:
                with torch.enable_grad():
                    zo.add(-(advantages[t] * weight * step_log_prob(backbone, cond, traj, t)).mean())
            calls.forward += len(zo_steps)
            calls.backward += len(zo_steps)
        elif perturb is not None:
            batch_mean = float(rewards.detach().mean())
            advantage = batch_mean - (self.es_baseline or 0.0)
            for t in rest:
                zo.add_tensors(perturb.direction(t), -advantage / self.es_sigma)
            self.es_baseline = batch_mean if self.es_baseline is None else 0.9 * self.es_baseline + 0.1 * batch_mean

        stats = dict(
            j=float(j),
            fo_norm=fo.flush(),
            ho_norm=ho.flush(),
            zo_norm=zo.flush(),
            grad_norm=grad_norm(params),
            calls_forward=float(calls.forward),
            calls_backward=float(calls.backward),
            calls_reward=float(1 + (len(scored) if self.state_baseline else 0)),
            backprop_depth=float(max(self.h, self.fo_steps)),  # most calls in one backward graph
        )
        if self.h:
            self.start.observe(j, stats["ho_norm"])
        return finished(stats, raw, terms)

    def state_dict(self) -> dict:
        start, baseline = self.start.state_dict(), self.baseline.state_dict()
        return {"start": start, "baseline": baseline, "es_baseline": self.es_baseline}

    def load_state_dict(self, state: dict) -> None:
        self.start.load_state_dict(state["start"])
        self.baseline.load_state_dict(state["baseline"])
        self.es_baseline = state["es_baseline"]
