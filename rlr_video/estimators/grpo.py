"""GRPO on the denoising chain, exact to Flow-GRPO's training step (Liu et al. 2025, arXiv 2505.05470).

References (yifan123/flow_grpo): ``scripts/train_sd3.py`` and ``scripts/train_wan2_1.py`` (the
TRAINING loop: ``compute_log_prob``, the "grpo logic" block), ``scripts/train_sd3_fast.py`` with
``flow_grpo/diffusers_patch/sd3_pipeline_with_logprob_fast.py`` (Flow-GRPO-Fast's SDE window),
``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py`` (the step and its mean-reduced log-prob),
``flow_grpo/stat_tracking.py`` (group advantages) and ``config/grpo.py`` / ``config/base.py``
(defaults). DanceGRPO's update is the same clipped surrogate without the KL term (``beta: 0``).

One update, for a micro-batch holding k videos of each prompt (``train.group_size``):

1. sample the chain (its stochastic steps as the transition says, or only an SDE window of
   ``sde_window_size`` steps with every other step deterministic: Flow-GRPO-Fast), decode, score;
2. A_i = (r_i - group mean) / (group std + 1e-4) (``common.group_advantages``), clipped to
   +-``adv_clip_max``;
3. for each trained step t: log p_t = log N(x_{t-1}; mu_theta(x_t), sigma_t^2) *averaged* over the
   latent elements (Flow-GRPO and DDPO reduce it by the mean), ratio = exp(log p_t - log p_old),
   policy loss = mean_i max(-A_i ratio_i, -A_i clamp(ratio_i, 1 - clip_range, 1 + clip_range)),
   plus ``beta`` * mean_i mean_elements (mu_theta - mu_ref)^2 / (2 sigma_t^2), the exact KL of the
   two Gaussian steps per element, mu_ref from the model with its LoRA disabled
   (``backbone.base_model()``);
4. the gradient of the mean over trained steps of those losses goes to ``p.grad`` (Flow-GRPO
   accumulates one backward per step and divides by the number of steps).

The batch is kept for ``inner_epochs`` updates (the trainer feeds the same prompts): log p_old is
the first update's (on-policy, ratio 1), the later ones are off-policy and clipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from rlr_video.chain import Trajectory, predict, rollout
from rlr_video.errors import ConfigError
from rlr_video.estimators.common import (
    CallCount,
    GradPart,
    all_finite,
    check_prompts,
    finished,
    grad_norm,
    group_advantages,
    group_stats,
    randint,
    require_noise,
    require_reference_model,
    score,
    skipped,
)
from rlr_video.estimators.registry import (
    BaseEstimator,
    Estimate,
    EstimatorConfig,
    RunContext,
    bounds,
    register_estimator,
)
from rlr_video.memory.planner import Workload


@dataclass
class GRPOConfig(EstimatorConfig):
    """``estimator.name: grpo``: Flow-GRPO (see ``GRPO``). Defaults are Flow-GRPO's Wan 2.1 preset
    (``config/grpo.py::general_ocr_wan2_1``) where it sets the key, else its ``config/base.py``."""

    name: str = "grpo"
    # PPO's clip range on the per-step ratio (Wan preset 1e-3; base.py 1e-4)
    clip_range: float = field(default=1e-3, metadata=bounds(0.0))
    # advantages clipped to +-adv_clip_max (base.py: 5)
    adv_clip_max: float = field(default=5.0, metadata=bounds(0.0))
    # weight of the KL to the reference model (the LoRA disabled) (Wan preset: 0.004)
    beta: float = field(default=0.004, metadata=bounds(0.0))
    # divide by the std of the whole micro-batch instead of each prompt's group (Wan preset: false)
    global_std: bool = False
    # the share of the chain's stochastic steps trained per update, int(T * fraction) of them (Wan: 0.99)
    timestep_fraction: float = field(default=0.99, metadata=bounds(0.0, 1.0))
    # which of them: "first", the noisiest, in chain order (Flow-GRPO); "random", a uniform subset
    # drawn once per sampled batch (DDPO shuffles the steps)
    timestep_order: Literal["first", "random"] = "first"
    # Flow-GRPO-Fast: only this many consecutive steps are stochastic (and trained), every other
    # step is deterministic (DDIM eta 0 / the flow ODE); 0: off (Wan preset: off; Fast presets 2-3)
    sde_window_size: int = field(default=0, metadata=bounds(0))
    # [a, b]: the window's 0-based step indices (0 the noisiest) lie in a ... b - 1; its start is
    # uniform in a ... b - size. null: [0, T // 2] (Flow-GRPO-Fast's presets)
    sde_window_range: list[int] | None = None
    # updates per sampled batch: PPO's inner epochs, the later ones off-policy (base.py: 1)
    inner_epochs: int = field(default=1, metadata=bounds(1))

    def validate(self, run: RunContext) -> None:
        super().validate(run)
        T = run.num_steps
        w = self.sde_window_range
        if w is not None and (len(w) != 2 or not 0 <= w[0] <= w[1] <= T):
            raise ConfigError("estimator.sde_window_range", w, f"null or [a, b] with 0 <= a <= b <= {T}")
        if self.sde_window_size:
            lo, hi = self.window_range(T)
            if self.sde_window_size > hi - lo:
                allowed = f"0 ... {hi - lo} (the steps of estimator.sde_window_range [{lo}, {hi}])"
                raise ConfigError("estimator.sde_window_size", self.sde_window_size, allowed)
        elif int(T * self.timestep_fraction) < 1:
            allowed = f"a share of the {T} steps that trains at least one (>= {1 / T:.3g})"
            raise ConfigError("estimator.timestep_fraction", self.timestep_fraction, allowed)
        if self.inner_epochs > 1 and run.grad_accum != 1:  # one batch is kept, not one per micro-batch
            raise ConfigError("train.grad_accum", run.grad_accum, "1 when estimator.inner_epochs > 1")

    def window_range(self, num_steps: int) -> tuple[int, int]:
        """(a, b) of ``sde_window_range``, its default resolved."""
        w = self.sde_window_range
        return (0, num_steps // 2) if w is None else (int(w[0]), int(w[1]))

    def trained_steps(self, num_steps: int) -> int:
        return self.sde_window_size or max(1, int(num_steps * self.timestep_fraction))

    def workload(self, run: RunContext) -> Workload:
        n = self.trained_steps(run.num_steps)
        # the reference prediction runs between the step's forward and its backward (_step_loss)
        return Workload(
            grad_calls=n, extra_forwards=n if self.beta > 0 else 0, forwards_hold_graph=True, trajectory=True
        )

    def build(self, run: RunContext) -> GRPO:
        window = self.window_range(run.num_steps) if self.sde_window_size else None
        return GRPO(
            clip_range=self.clip_range,
            adv_clip_max=self.adv_clip_max,
            beta=self.beta,
            global_std=self.global_std,
            timestep_fraction=self.timestep_fraction,
            timestep_order=self.timestep_order,
            sde_window_size=self.sde_window_size,
            sde_window_range=window,
            inner_epochs=self.inner_epochs,
        )


@dataclass
class _Batch:
    """A sampled batch kept for the inner epochs (``cond`` None: encode the prompts again)."""

    prompts: list[str]
    cond: Any
    traj: Trajectory
    rewards: Tensor
    terms: dict[str, Tensor]
    advantages: Tensor  # (B,) float64, unclipped
    steps: list[int]  # the trained steps, chain indices
    old_log_probs: dict[int, Tensor]  # per trained step, mean-reduced, from the first update
    uses_left: int

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only; the conditioning is encoded again after a resume."""
        traj = {"latents": self.traj.latents, "noises": self.traj.noises, "stds": self.traj.stds}
        plain = {k: v for k, v in vars(self).items() if k not in ("cond", "traj")}
        return {**plain, "traj": traj}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Batch:
        return cls(**{**state, "traj": Trajectory(**state["traj"]), "cond": None})


@register_estimator("grpo", GRPOConfig)
class GRPO(BaseEstimator):
    """Flow-GRPO's clipped, group-normalised policy gradient with a KL to the reference model.

    Works on every Gaussian chain: the flow-matching SDE (whose step is Flow-GRPO's, see
    ``rlr_video.chain.flow``) and DDIM-eta (DDPO's ``ddim_step_with_logprob``, which Flow-GRPO's
    step was adapted from). Args are ``GRPOConfig``'s keys; ``sde_window_range`` is resolved to
    (a, b). The trainer's per-prompt ``reward_offset`` is not used: it is constant within a
    prompt's group, so the group mean removes it (Flow-GRPO has none).
    """

    def __init__(
        self,
        clip_range: float = 1e-3,
        adv_clip_max: float = 5.0,
        beta: float = 0.004,
        global_std: bool = False,
        timestep_fraction: float = 0.99,
        timestep_order: str = "first",
        sde_window_size: int = 0,
        sde_window_range: tuple[int, int] | None = None,
        inner_epochs: int = 1,
    ):
        if timestep_order not in ("first", "random"):
            raise ValueError(f"timestep_order={timestep_order!r}: expected first or random")
        if sde_window_size and sde_window_range is None:
            raise ValueError("sde_window_size > 0 needs sde_window_range (a, b)")
        self.clip_range, self.adv_clip_max, self.beta = clip_range, adv_clip_max, beta
        self.global_std = global_std
        self.timestep_fraction, self.timestep_order = timestep_fraction, timestep_order
        self.sde_window_size, self.sde_window_range = sde_window_size, sde_window_range
        self.inner_epochs = self.updates_per_batch = inner_epochs
        self._batch: _Batch | None = None

    # ---------------------------------------------------------------- sampling

    def _steps(self, transition, T: int, generator: torch.Generator) -> tuple[list[int], list[int] | None]:
        """(the steps trained, the steps that inject noise: None for every step)."""
        if self.sde_window_size:
            # sd3_pipeline_with_logprob_fast: start = random.randint(a, b - size), window [start, start + size)
            lo, hi = self.sde_window_range
            start = lo + randint(generator, hi - self.sde_window_size - lo + 1)
            steps = [T - i for i in range(start, start + self.sde_window_size)]
            require_noise(transition, steps, "GRPO's SDE window")
            return steps, steps
        candidates = [t for t in range(T, 0, -1) if transition.noise_std(t) > 0]
        if not candidates:
            raise ValueError("GRPO needs stochastic steps: use eta > 0 (DDIM) or a flow noise_level > 0")
        n = min(max(1, int(T * self.timestep_fraction)), len(candidates))
        if self.timestep_order == "first":
            return candidates[:n], None
        picked = torch.randperm(len(candidates), generator=generator, device=generator.device)[:n]
        return sorted((candidates[int(i)] for i in picked), reverse=True), None

    def _sample(self, backbone, reward, prompts, generator, calls: CallCount) -> _Batch | Estimate:
        steps, stochastic = self._steps(backbone.transition, backbone.num_steps, generator)
        with torch.no_grad():
            cond = backbone.encode(prompts)
            traj = rollout(backbone, cond, generator, len(prompts), stochastic=stochastic)
            raw, terms = score(reward, backbone.decode(traj.sample), prompts)
        calls.forward += backbone.num_steps
        if not all_finite(raw):
            return skipped(raw, terms)
        advantages = group_advantages(raw, prompts, self.global_std)
        return _Batch(list(prompts), cond, traj, raw, terms, advantages, steps, {}, self.inner_epochs)

    # ---------------------------------------------------------------- the update

    def estimate(
        self, backbone, reward, prompts: Sequence[str], generator: torch.Generator, reward_offset: Tensor | None = None
    ) -> Estimate:
        check_prompts(prompts)
        require_reference_model(backbone, "beta", self.beta)
        params = backbone.trainable_parameters()
        calls = CallCount()
        batch = self._batch
        sampled = batch is None or batch.uses_left == 0 or batch.prompts != list(prompts)
        if sampled:
            batch = self._sample(backbone, reward, prompts, generator, calls)
            if isinstance(batch, Estimate):
                return batch
        elif batch.cond is None:  # a batch restored from a checkpoint
            with torch.no_grad():
                batch.cond = backbone.encode(batch.prompts)
        batch.uses_left -= 1
        self._batch = batch if batch.uses_left > 0 else None

        part = GradPart(params)
        totals = dict.fromkeys(("policy_loss", "kl", "clip_fraction", "approx_kl"), 0.0)
        for t in batch.steps:
            with torch.enable_grad():
                terms = self._step_loss(backbone, batch, t)
                loss = terms.pop("loss")
                part.add(loss / len(batch.steps))
            for k, v in terms.items():
                totals[k] += v / len(batch.steps)
        n = len(batch.steps)
        calls.forward += n * (2 if self.beta > 0 else 1)
        calls.backward += n
        stats = dict(
            zo_norm=part.flush(),
            grad_norm=grad_norm(params),
            calls_forward=float(calls.forward),
            calls_backward=float(calls.backward),
            calls_reward=float(sampled),
            backprop_depth=1.0,
            trained_steps=float(n),
            advantage_abs=float(batch.advantages.clamp(-self.adv_clip_max, self.adv_clip_max).abs().mean()),
            **totals,
            **group_stats(batch.rewards, batch.prompts),
        )
        return finished(stats, batch.rewards, batch.terms, fresh=sampled)

    def _step_loss(self, backbone, batch: _Batch, t: int) -> dict[str, Any]:
        """Flow-GRPO's loss at step t (``train_sd3.py`` / ``train_wan2_1.py``, "grpo logic")."""
        transition = backbone.transition
        x_t = batch.traj.latents[t].detach()
        output = predict(backbone, x_t, t, batch.cond)
        mean, std = transition.mean_std(output, t, x_t)
        # sde_step_with_logprob: log_prob.mean(dim=tuple(range(1, ndim))), the mean over elements
        log_prob = transition.log_prob(batch.traj.latents[t - 1].detach(), mean, std) / x_t[0].numel()
        old = batch.old_log_probs.setdefault(t, log_prob.detach())
        ratio = torch.exp(log_prob - old)
        adv = batch.advantages.to(ratio).clamp(-self.adv_clip_max, self.adv_clip_max)
        bounded = ratio.clamp(1.0 - self.clip_range, 1.0 + self.clip_range)
        policy = torch.maximum(-adv * ratio, -adv * bounded).mean()
        loss, kl = policy, torch.zeros(())
        if self.beta > 0:
            with torch.no_grad(), backbone.base_model():
                ref_mean, _ = transition.mean_std(predict(backbone, x_t, t, batch.cond), t, x_t)
            std32 = torch.as_tensor(std, dtype=torch.float32, device=mean.device)
            kl = ((mean.float() - ref_mean.float()).pow(2) / (2 * std32.pow(2))).flatten(1).mean(1).mean()
            loss = policy + self.beta * kl
        diff = (log_prob - old).detach()
        return {
            "loss": loss,
            "policy_loss": float(policy.detach()),
            "kl": float(kl.detach()),
            "clip_fraction": float(((ratio.detach() - 1.0).abs() > self.clip_range).float().mean()),
            "approx_kl": float(0.5 * diff.pow(2).mean()),
        }

    # ---------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, Any]:
        return {"batch": self._batch.state_dict() if self._batch is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._batch = _Batch.from_state(state["batch"]) if state["batch"] is not None else None
