"""DiffusionNFT: online RL on the forward process, likelihood-free (Zheng et al. 2025, arXiv 2509.16117).

Reference: NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py`` (the TRAINING loop and
``return_decay``), ``config/nft.py`` and ``config/base.py`` (defaults), ``flow_grpo/stat_tracking.py``
(group advantages, Flow-GRPO's).

One update, for a micro-batch holding k videos of each prompt (``train.group_size``):

1. sample clean videos x_0 with the old policy v_old (an EMA copy of the LoRA), on the chain's
   deterministic sampler by default (the reference samples an ODE solver; no log-probs), decode
   and score them;
2. map rewards to an optimality probability per video: A = group-normalised reward
   (``common.group_advantages``), clipped to +-``adv_clip_max``, r = clamp(A / adv_clip_max / 2 + 1/2,
   0, 1);
3. for int(T * ``timestep_fraction``) of the chain's T noise levels, in a random order drawn once
   per update and shared by the batch: x_t = forward-noised x_0 with fresh noise, then
   v+ = beta v_theta + (1 - beta) v_old (the implicit positive policy),
   v- = (1 + beta) v_old - beta v_theta (the implicit negative one), and the loss
   adv_clip_max * mean_i [r_i ||x0(v+) - x_0||^2 / w+_i + (1 - r_i) ||x0(v-) - x_0||^2 / w-_i] / beta
   (norms averaged over elements; w = the detached mean |x0(v) - x_0| per video: the reference's
   "adaptive weighting"), plus ``kl_beta`` * mean ||v_theta - v_ref||^2 (the LoRA disabled);
4. the gradient of the mean over those steps goes to ``p.grad``; once per sampled batch the old
   policy moves: v_old <- decay v_old + (1 - decay) v_theta, decay by ``decay_type``.

Parameterisations. The reference compares in x_0 space, x0(v) = x_t - t v for flow matching. Here
x0(out) is the transition's own unclipped conversion at the step's noise level:

- flow matching (Wan; v = eps - x_0, x_t = (1 - s) x_0 + s eps):  x0 = x_t - s v,
  so x0(v_hat) - x_0 = s (v - v_hat);
- eps-prediction DDIM (x_t = a x_0 + b eps, a = sqrt(alpha_bar), b = sqrt(1 - alpha_bar)):
  x0 = (x_t - b eps_hat) / a, so x0(eps_hat) - x_0 = (b / a) (eps - eps_hat);
- v-prediction DDIM (v = a eps - b x_0):  x0 = a x_t - b v_hat, so x0(v_hat) - x_0 = b (v - v_hat).

Each map is affine in the output and v+ / v- are affine combinations (their weights sum to 1), so
x0(v+) = beta x0(v_theta) + (1 - beta) x0(v_old): the loss is the paper's loss in the model's own
parameterisation, ||v+ - v||^2, weighted by c_t^2 (c_t = s, b / a or b) and the adaptive weight, with
the target (eps - x_0, eps or a eps - b x_0) never formed: in x_0 space it is the clean sample itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from rlr_video.chain import draw_noise, predict, rollout
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
    require_reference_model,
    score,
    skipped,
    swapped_weights,
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


def nft_decay(step: int, decay_type: int) -> float:
    """The EMA decay of v_old after ``step`` optimizer updates (``return_decay`` of
    ``train_nft_sd3.py``): 0 for the first ``flat`` updates, then rising by ``uprate`` per update
    up to ``uphold``. Type 0: always 0 (v_old = v_theta); 1: min(0.001 step, 0.5); 2: 0 for 75
    updates, then min(0.0075 (step - 75), 0.999)."""
    flat, uprate, uphold = {0: (0, 0.0, 0.0), 1: (0, 0.001, 0.5), 2: (75, 0.0075, 0.999)}[decay_type]
    return 0.0 if step < flat else min((step - flat) * uprate, uphold)


@dataclass
class NFTConfig(EstimatorConfig):
    """``estimator.name: nft``: DiffusionNFT (see ``NFT``). DiffusionNFT ships SD3.5 presets only
    (no Wan): the defaults are its ``config/nft.py::_get_config`` (SD3.5-M) and ``config/base.py``."""

    name: str = "nft"
    # the implicit policies' beta: v+ = beta v + (1 - beta) v_old (config/nft.py: 1.0; its OCR preset 0.1)
    beta: float = field(default=1.0, metadata=bounds(0.0))
    # weight of ||v_theta - v_ref||^2, the reference being the model with its LoRA disabled (train.beta: 1e-4)
    kl_beta: float = field(default=1e-4, metadata=bounds(0.0))
    # advantages clipped to +-adv_clip_max before r = A / adv_clip_max / 2 + 1/2 (base.py: 5)
    adv_clip_max: float = field(default=5.0, metadata=bounds(0.0))
    # normalise by the std of the whole micro-batch instead of each prompt's group (base.py: true)
    global_std: bool = True
    # the share of the chain's T noise levels trained per update, int(T * fraction) of them (base.py: 0.99)
    timestep_fraction: float = field(default=0.99, metadata=bounds(0.0, 1.0))
    # the old policy's EMA schedule (return_decay): 0 v_old = v_theta; 1 min(0.001 step, 0.5);
    # 2 flat 75 updates then min(0.0075 (step - 75), 0.999) (config/nft.py: 1; its OCR preset 2)
    decay_type: Literal[0, 1, 2] = 1
    # which policy samples the training videos: "old" (the EMA copy, as the reference) or "current"
    sample_policy: Literal["old", "current"] = "old"
    # sample with the chain's deterministic twin (DDIM eta 0 / the flow ODE; the reference samples
    # an ODE solver, sample.deterministic: true); false: the chain as model.eta sets it
    deterministic: bool = True

    def validate(self, run: RunContext) -> None:
        super().validate(run)
        if self.beta <= 0:
            raise ConfigError("estimator.beta", self.beta, "numbers > 0 (the NFT loss divides by it)")
        if self.adv_clip_max <= 0:
            raise ConfigError("estimator.adv_clip_max", self.adv_clip_max, "numbers > 0 (r divides by it)")
        if int(run.num_steps * self.timestep_fraction) < 1:
            allowed = f"a share of the {run.num_steps} steps that trains at least one (>= {1 / run.num_steps:.3g})"
            raise ConfigError("estimator.timestep_fraction", self.timestep_fraction, allowed)

    def workload(self, run: RunContext) -> Workload:
        n = int(run.num_steps * self.timestep_fraction)
        extra = n * (2 if self.kl_beta > 0 else 1)  # v_old's call, and v_ref's
        return Workload(grad_calls=n, extra_forwards=extra, trajectory=False, param_copies=1)

    def build(self, run: RunContext) -> NFT:
        return NFT(
            beta=self.beta,
            kl_beta=self.kl_beta,
            adv_clip_max=self.adv_clip_max,
            global_std=self.global_std,
            timestep_fraction=self.timestep_fraction,
            decay_type=self.decay_type,
            sample_policy=self.sample_policy,
            deterministic=self.deterministic,
            grad_accum=run.grad_accum,
        )


@register_estimator("nft", NFTConfig)
class NFT(BaseEstimator):
    """DiffusionNFT's negative-aware fine-tuning on forward-noised samples of the current batch.

    Args are ``NFTConfig``'s keys; ``grad_accum`` (``train.grad_accum``): estimate calls per
    optimizer update, so the old policy moves once per update, after it (the reference updates it
    once per epoch of sampling and training). The trainer's per-prompt ``reward_offset`` is not
    used: the group mean removes it (the reference has none).

    State (``state_dict``): v_old's tensors and the number of calls made, so a resumed run
    continues exactly.
    """

    def __init__(
        self,
        beta: float = 1.0,
        kl_beta: float = 1e-4,
        adv_clip_max: float = 5.0,
        global_std: bool = True,
        timestep_fraction: float = 0.99,
        decay_type: int = 1,
        sample_policy: str = "old",
        deterministic: bool = True,
        grad_accum: int = 1,
    ):
        if beta <= 0 or adv_clip_max <= 0:
            raise ValueError(f"beta={beta} and adv_clip_max={adv_clip_max} must be > 0")
        if decay_type not in (0, 1, 2) or sample_policy not in ("old", "current"):
            raise ValueError(f"decay_type={decay_type!r} (0, 1, 2), sample_policy={sample_policy!r} (old, current)")
        self.beta, self.kl_beta, self.adv_clip_max = beta, kl_beta, adv_clip_max
        self.global_std, self.timestep_fraction = global_std, timestep_fraction
        self.decay_type, self.sample_policy, self.deterministic = decay_type, sample_policy, deterministic
        self.grad_accum = grad_accum
        self.old: list[Tensor] | None = None  # v_old's trainable tensors
        self.calls = 0  # estimate calls so far (grad_accum per optimizer update)
        self.decay = 0.0  # the decay of v_old's last update

    # ---------------------------------------------------------------- the old policy

    def _advance_old(self, params: Sequence[torch.nn.Parameter]) -> None:
        """v_old starts as v_theta; after each optimizer update (at the first call of the next one)
        old <- old * decay + theta * (1 - decay), as the reference does after each epoch."""
        if self.old is None:
            self.old = [p.detach().clone() for p in params]
        elif self.calls % self.grad_accum == 0:
            self.decay = nft_decay(self.calls // self.grad_accum, self.decay_type)
            with torch.no_grad():
                for old, p in zip(self.old, params, strict=True):
                    old.copy_(old * self.decay + p.detach() * (1.0 - self.decay))
        self.calls += 1

    # ---------------------------------------------------------------- the update

    def estimate(
        self, backbone, reward, prompts: Sequence[str], generator: torch.Generator, reward_offset: Tensor | None = None
    ) -> Estimate:
        check_prompts(prompts)
        require_reference_model(backbone, "kl_beta", self.kl_beta)
        params = backbone.trainable_parameters()
        self._advance_old(params)
        T, transition, calls = backbone.num_steps, backbone.transition, CallCount()
        with torch.no_grad():
            cond = backbone.encode(prompts)
            with swapped_weights(params, self.old) if self.sample_policy == "old" else contextlib.nullcontext():
                stochastic = () if self.deterministic else None
                x0 = rollout(backbone, cond, generator, len(prompts), stochastic=stochastic).sample
            raw, terms = score(reward, backbone.decode(x0), prompts)
        calls.forward += T
        if not all_finite(raw):
            return skipped(raw, terms)
        advantages = group_advantages(raw, prompts, self.global_std).to(x0.device)
        clipped = advantages.clamp(-self.adv_clip_max, self.adv_clip_max)
        r = ((clipped / self.adv_clip_max) / 2.0 + 0.5).clamp(0, 1)  # the optimality probability

        n = int(T * self.timestep_fraction)
        order = torch.randperm(T, generator=generator, device=generator.device)[:n]
        steps = [T - int(i) for i in order]  # index 0 is the noisiest level, chain step T
        part = GradPart(params)
        totals = dict.fromkeys(("policy_loss", "kl", "old_deviate"), 0.0)
        for t in steps:
            x_t = transition.add_noise(x0, draw_noise(x0, generator), t)
            with torch.no_grad():
                with swapped_weights(params, self.old):
                    old_out = predict(backbone, x_t, t, cond)
                ref_out = None
                if self.kl_beta > 0:
                    with backbone.base_model():
                        ref_out = predict(backbone, x_t, t, cond)
            with torch.enable_grad():
                out = predict(backbone, x_t, t, cond)
                loss, values = self._loss(transition, t, x_t, x0, r, out, old_out, ref_out)
                part.add(loss / n)
            for k, v in values.items():
                totals[k] += v / n
        calls.forward += n * (3 if self.kl_beta > 0 else 2)
        calls.backward += n
        stats = dict(
            zo_norm=part.flush(),
            grad_norm=grad_norm(params),
            calls_forward=float(calls.forward),
            calls_backward=float(calls.backward),
            calls_reward=1.0,
            backprop_depth=1.0,
            trained_steps=float(n),
            optimality=float(r.mean()),
            ema_decay=self.decay,
            **totals,
            **group_stats(raw, prompts),
        )
        return finished(stats, raw, terms)

    def _loss(self, transition, t, x_t, x0, r, out, old_out, ref_out) -> tuple[Tensor, dict[str, float]]:
        """``train_nft_sd3.py``'s loss at noise level t, in x_0 space (see the module docstring)."""
        beta, dims = self.beta, tuple(range(1, x0.ndim))
        positive = beta * out + (1 - beta) * old_out
        negative = (1.0 + beta) * old_out - beta * out
        target = x0.double()

        def weighted(prediction: Tensor) -> Tensor:
            x0_hat = transition.predict_x0(prediction, t, x_t, clip=False)
            with torch.no_grad():  # the adaptive weight: mean |x0_hat - x0| per video, at least 1e-5
                weight = (x0_hat.double() - target).abs().mean(dim=dims, keepdim=True).clip(min=1e-5)
            return ((x0_hat - x0) ** 2 / weight).mean(dim=dims)

        per_video = r * weighted(positive) / beta + (1.0 - r) * weighted(negative) / beta
        policy = (per_video * self.adv_clip_max).mean()
        loss, kl = policy, torch.zeros(())
        if ref_out is not None:
            kl = ((out - ref_out) ** 2).mean(dim=dims).mean()
            loss = policy + self.kl_beta * kl
        old_deviate = float(((out.detach() - old_out) ** 2).mean())
        return loss, {"policy_loss": float(policy.detach()), "kl": float(kl.detach()), "old_deviate": old_deviate}

    # ---------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, Any]:
        return {"old": self.old, "calls": self.calls, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.old = None if state["old"] is None else [t.clone() for t in state["old"]]
        self.calls, self.decay = int(state["calls"]), float(state["decay"])
