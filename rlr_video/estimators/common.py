"""Pieces every estimator shares: reward baselines and advantages, scoring, per-part gradient
accumulation, and counting denoiser calls."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from rlr_video.chain import predict
from rlr_video.errors import ConfigError
from rlr_video.estimators.registry import Estimate, EstimatorConfig, RunContext

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

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"running": dict(self.running)}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        self.running = dict(state["running"])

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
        n = len(r)
        check_state_baseline(self.kind, n)
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


def prompt_groups(prompts: Sequence[str]) -> list[list[int]]:
    """Indices of the videos of each distinct prompt, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return list(groups.values())


def group_advantages(rewards: Tensor, prompts: Sequence[str], global_std: bool = False) -> Tensor:
    """GRPO's group-normalised advantages, float64, as Flow-GRPO's ``PerPromptStatTracker.update``
    (yifan123/flow_grpo ``flow_grpo/stat_tracking.py``; DiffusionNFT ships the same file):
    A_i = (r_i - mean of i's prompt group) / (std + 1e-4), the std the population one (numpy's
    ``np.std``, ddof 0) of the group, or of the whole batch with ``global_std``.

    When every video is alone in its group (k = 1 videos per prompt), the batch mean and std, as
    Flow-GRPO's scripts do without per-prompt tracking (``(r - r.mean()) / (r.std() + 1e-4)``).
    The groups are the micro-batch's: Flow-GRPO gathers the rewards of every process first, so
    with several processes its ``global_std`` spans them all, here one micro-batch."""
    r = rewards.detach().double().cpu()
    groups = prompt_groups(prompts)
    if all(len(g) == 1 for g in groups):
        return (r - r.mean()) / (r.std(unbiased=False) + 1e-4)
    out = torch.empty_like(r)
    batch_std = r.std(unbiased=False) if len(r) > 1 else torch.zeros((), dtype=r.dtype)
    for g in groups:
        members = r[g]
        std = batch_std if global_std else members.std(unbiased=False) if len(g) > 1 else torch.zeros(())
        out[g] = (members - members.mean()) / (std + 1e-4)
    return out


def group_stats(rewards: Tensor, prompts: Sequence[str]) -> dict[str, float]:
    """Per-group reward diagnostics Flow-GRPO logs: the mean within-group std (``reward_std_mean``)
    and the share of groups whose rewards are all equal (``zero_std_ratio``: they teach nothing)."""
    r = rewards.detach().double().cpu()
    stds = [float(r[g].std(unbiased=False)) if len(g) > 1 else 0.0 for g in prompt_groups(prompts)]
    return {
        "groups": float(len(stds)),
        "group_reward_std": sum(stds) / len(stds),
        "zero_std_ratio": sum(s == 0.0 for s in stds) / len(stds),
    }


STATE_BASELINES = ("loo", "group")
STATE_BASELINE_BATCH = 3  # the slope of R on b(x_t) is fitted on the *other* videos: two at least


def check_state_baseline(baseline: str, batch: int | None = None) -> None:
    """A state-dependent baseline is centred by leave-one-out (within the batch or the prompt's
    group) and needs a slope fitted on two other videos; ValueError naming what is missing."""
    if baseline not in STATE_BASELINES:
        raise ValueError(f"a state-dependent baseline needs baseline loo or group, not {baseline!r}")
    if batch is not None and batch < STATE_BASELINE_BATCH:
        raise ValueError(
            f"a state-dependent baseline needs at least {STATE_BASELINE_BATCH} videos per batch, got {batch}"
        )


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


def score(reward, frames: Tensor, prompts: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """``reward(frames, prompts)`` and its terms: each term of a composite reward
    (``score_terms``, summed by its ``combine``), else ``{reward name: rewards}``.

    The rewards are checked to be one score per video: a (B, 1) or (B, F) output would broadcast
    against (B,) advantages and silently give a wrong gradient."""
    name = getattr(reward, "name", type(reward).__name__)
    if callable(getattr(reward, "score_terms", None)):
        terms = reward.score_terms(frames, prompts)
        rewards = reward.combine(terms)
    else:
        rewards = reward(frames, prompts)
        terms = {name: rewards}
    if not isinstance(rewards, Tensor) or tuple(rewards.shape) != (len(prompts),):
        got = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
        want = f"one score per video, shape ({len(prompts)},)"
        raise ValueError(f"reward {name!r} returned {got}; a reward returns {want}")
    return rewards, terms


def centred(rewards: Tensor, offset: Tensor | None) -> Tensor:
    """``rewards - offset`` (the caller's baseline, e.g. the trainer's per-prompt running mean),
    in the rewards' dtype; the rewards themselves when there is none."""
    return rewards if offset is None else rewards - offset.to(rewards)


def finished(
    stats: dict[str, float], rewards: Tensor, terms: dict[str, Tensor], skipped: bool = False, fresh: bool = True
) -> Estimate:
    """The ``Estimate`` of an update: rewards and terms detached to float32 on the CPU."""

    def plain(t: Tensor) -> Tensor:
        return t.detach().float().cpu()

    return Estimate(stats, plain(rewards), {k: plain(v) for k, v in terms.items()}, skipped, fresh)


def skipped(rewards: Tensor, terms: dict[str, Tensor]) -> Estimate:
    """An update skipped because a reward was NaN or infinite: nothing reaches ``p.grad``."""
    stats = {"nonfinite_rewards": float((~torch.isfinite(rewards.detach())).sum())}
    return finished(stats, rewards, terms, skipped=True)


def all_finite(rewards: Tensor) -> bool:
    return bool(torch.isfinite(rewards).all())


def grad_norm(params: Sequence[torch.nn.Parameter]) -> float:
    sq = sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None)
    return math.sqrt(sq)


def step_log_prob(backbone, cond, traj, step: int, latents: Tensor | None = None, checkpoint: bool = False) -> Tensor:
    """log N(x_{t-1}; mean_theta(x_t, t), std_t^2) at a stored transition.

    x_t is the stored latent (detached: gradients reach the parameters only) unless
    ``latents`` gives a replayed one; the stored x_{t-1} is always detached.
    """
    x_t = traj.latents[step].detach() if latents is None else latents
    output = predict(backbone, x_t, step, cond, checkpoint)
    mean, std = backbone.transition.mean_std(output, step, x_t)
    return backbone.transition.log_prob(traj.latents[step - 1].detach(), mean, std)


def state_values(
    backbone, reward, traj, steps: Sequence[int], prompts: Sequence[str], offset: Tensor | None = None
) -> dict[int, Tensor]:
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
            v = centred(score(reward, backbone.decode(traj.extras["x0"][t]), prompts)[0], offset).detach().float()
            values[t] = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
    return values


def require_reference_model(backbone, key: str, value: float) -> None:
    """A KL to the reference model (``estimator.<key> > 0``) needs ``backbone.base_model()``."""
    if value > 0 and not callable(getattr(backbone, "base_model", None)):
        raise ValueError(
            f"estimator.{key}={value} needs the reference model: {type(backbone).__name__} has no "
            f"base_model() (the model without its LoRA); set estimator.{key}=0"
        )


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


@contextlib.contextmanager
def swapped_weights(params: Sequence[torch.nn.Parameter], values: Sequence[Tensor]) -> Iterator[None]:
    """Inside: ``params`` hold ``values`` (their tensors swapped in, nothing copied), e.g. an EMA
    copy of the LoRA; their own tensors are back on exit. For forward passes without gradients:
    a graph built inside would refer to the swapped-in tensors."""
    own = [p.data for p in params]
    for p, v in zip(params, values, strict=True):
        p.data = v
    try:
        yield
    finally:
        for p, data in zip(params, own):
            p.data = data


def randint(generator: torch.Generator, high: int) -> int:
    """A uniform integer in [0, high) from the caller's generator (CPU or CUDA)."""
    return int(torch.randint(high, (), generator=generator, device=generator.device))


@dataclass
class AdvantageConfig(EstimatorConfig):
    """Config keys of the estimators whose likelihood-ratio terms need advantages A = R - b."""

    # loo: leave-one-out batch mean; group: the other videos of the same prompt (train.group_size);
    # running: per-prompt running mean of earlier updates; none: b = 0 (see RewardBaseline)
    baseline: Literal["loo", "group", "running", "none"] = "loo"
    # divide advantages by the batch std: lower variance, but biased, so off by default
    normalize: bool = False
    # per step t, subtract the reward of the denoiser's clean estimate x0_hat(x_t) first: a
    # state-dependent control variate (unbiased; one decode and reward call per scored step)
    state_baseline: bool = False

    def validate(self, run: RunContext) -> None:
        super().validate(run)
        if self.state_baseline:
            try:
                check_state_baseline(self.baseline)
            except ValueError:
                allowed = "loo or group with estimator.state_baseline"
                raise ConfigError("estimator.baseline", self.baseline, allowed) from None
            if run.batch_size < STATE_BASELINE_BATCH:
                allowed = f">= {STATE_BASELINE_BATCH} with estimator.state_baseline (its slope)"
                raise ConfigError("train.batch_size", run.batch_size, allowed)
        if self.baseline == "group" and run.group_size < 2:
            raise ConfigError("estimator.baseline", self.baseline, "loo, running or none unless train.group_size >= 2")
        # Leave-one-out over a micro-batch of one has no other video to average: b = 0. Refused
        # only when nothing else centres the rewards; train.prompt_baseline's running mean does.
        if self.baseline == "loo" and run.batch_size == 1 and not run.prompt_baseline:
            raise ConfigError(
                "train.batch_size",
                run.batch_size,
                ">= 2 with estimator.baseline: loo (a batch of one has no others to leave out); "
                "or set estimator.baseline: running, or train.prompt_baseline: true",
            )
