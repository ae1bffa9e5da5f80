"""NFT is DiffusionNFT's training step: its loss and gradient against a re-implementation.

The re-implementation follows NVlabs/DiffusionNFT ``scripts/train_nft_sd3.py`` (the TRAINING loop,
``return_decay`` and the old adapter's EMA update) with the forward process and the x_0 conversion
of each parameterisation written out here: flow matching (tiny Wan: x_t = (1 - s) x_0 + s eps,
x0 = x_t - s v), eps-prediction DDIM and v-prediction DDIM (toy denoisers on diffusers schedules).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from backbone_fixtures import tiny_model_dir, tiny_options
from diffusers import DDIMScheduler
from estimator_fixtures import DistanceReward, flat_grad
from tolerances import EPS, EPS64, assert_max_abs, assert_rel_close, layers, network_rtol, sum_atol

from rlr_video.backbones import load_backbone
from rlr_video.backbones.toy import ToyBackbone, ToyDenoiser
from rlr_video.chain import DDIMTransition, FlowSDETransition, rollout
from rlr_video.estimators.nft import NFT

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = ["a red circle", "a blue square", "a red circle", "a blue square", "a blue square"]  # groups of 2 and 3


def _perturb(backbone, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backbone.trainable_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _toy(prediction_type: str) -> ToyBackbone:
    """A toy denoiser on a DDIM schedule of that parameterisation; v-prediction with x0 clipping
    on at 0.5, which the NFT loss must not apply (its x_0 conversion is affine)."""
    torch.manual_seed(4)
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        clip_sample=prediction_type == "v_prediction",
        clip_sample_range=0.5,
        timestep_spacing="trailing",
    )
    transition = DDIMTransition.from_scheduler(scheduler, 6, eta=1.0)
    backbone = ToyBackbone(ToyDenoiser(2, 8), transition, latent_shape=(2, 3, 5, 3), seed=4)
    _perturb(backbone, 0.02, seed=21)  # the reference (initial weights) differs from theta
    return backbone


@pytest.fixture(scope="module")
def wan():
    backbone = load_backbone(tiny_model_dir("wan"), **tiny_options("wan", num_steps=5, height=32, width=16))
    _perturb(backbone, 0.05, seed=22)  # LoRA B starts at 0: theta would equal the reference
    return backbone


def return_decay(step, decay_type):
    """train_nft_sd3.py's schedule of the old adapter's EMA."""
    flat, uprate, uphold = [(0, 0.0, 0.0), (0, 0.001, 0.5), (75, 0.0075, 0.999)][decay_type]
    return 0.0 if step < flat else min((step - flat) * uprate, uphold)


def forward_noise(transition, x0, noise, step):
    if isinstance(transition, FlowSDETransition):
        s = transition.sigma(step)
        return (1 - s) * x0 + s * noise
    a = float(transition.alphas_cumprod[int(transition.timestep(step))])
    return math.sqrt(a) * x0 + math.sqrt(1 - a) * noise


def to_x0(transition, output, x_t, step):
    """x0 from each parameterisation's output, unclipped (derivations in rlr_video/estimators/nft.py)."""
    if isinstance(transition, FlowSDETransition):
        return x_t - transition.sigma(step) * output
    a = float(transition.alphas_cumprod[int(transition.timestep(step))])
    if transition.prediction_type == "epsilon":
        return (x_t - math.sqrt(1 - a) * output) / math.sqrt(a)
    return math.sqrt(a) * x_t - math.sqrt(1 - a) * output


def advantages_of(rewards, prompts, global_std):
    r, names = rewards.double().numpy(), np.array(prompts)
    out = np.zeros_like(r)
    for prompt in np.unique(names):
        group = r[names == prompt]
        out[names == prompt] = (group - group.mean()) / ((np.std(r) if global_std else np.std(group)) + 1e-4)
    return torch.from_numpy(out)


class Holding:
    """The parameters hold ``values`` inside (copied in, copied back)."""

    def __init__(self, params, values):
        self.params, self.values = params, values

    def __enter__(self):
        self.saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, v in zip(self.params, self.values):
                p.copy_(v)

    def __exit__(self, *exc):
        with torch.no_grad():
            for p, s in zip(self.params, self.saved):
                p.copy_(s)


def nft_loss(backbone, old, prompts, seed, beta, kl_beta, adv_clip_max, global_std, fraction):
    """One DiffusionNFT update on the estimator's draws: its loss (the mean over its timesteps)
    and gradient, one backward per timestep as the reference accumulates them."""
    transition, T = backbone.transition, backbone.num_steps
    params = backbone.trainable_parameters()
    generator = torch.Generator().manual_seed(seed)
    cond = backbone.encode(prompts)
    with torch.no_grad(), Holding(params, old):  # sampled by the old adapter, deterministically
        x0 = rollout(backbone, cond, generator, len(prompts), stochastic=()).sample
    rewards = DistanceReward()(backbone.decode(x0), prompts)
    advantages_clip = torch.clamp(advantages_of(rewards, prompts, global_std), -adv_clip_max, adv_clip_max)
    r = torch.clamp((advantages_clip / adv_clip_max) / 2.0 + 0.5, 0, 1)
    n = int(T * fraction)
    order = torch.randperm(T, generator=generator)[:n]
    dims = tuple(range(1, x0.ndim))
    total, largest, grad = 0.0, 0.0, 0.0
    for i in order:
        t = T - int(i)
        noise = torch.randn(x0.shape, generator=generator)
        xt = forward_noise(transition, x0, noise, t)
        with torch.no_grad():
            with Holding(params, old):
                old_prediction = backbone.predict(xt, t, cond)
            with backbone.base_model():
                ref_forward_prediction = backbone.predict(xt, t, cond)
        forward_prediction = backbone.predict(xt, t, cond)
        positive_prediction = beta * forward_prediction + (1 - beta) * old_prediction
        implicit_negative_prediction = (1.0 + beta) * old_prediction - beta * forward_prediction
        x0_prediction = to_x0(transition, positive_prediction, xt, t)
        largest = max(largest, float(x0_prediction.detach().abs().max()))
        weight_factor = (x0_prediction.detach().double() - x0.double()).abs().mean(dim=dims, keepdim=True).clip(1e-5)
        positive_loss = ((x0_prediction - x0) ** 2 / weight_factor).mean(dim=dims)
        negative_x0_prediction = to_x0(transition, implicit_negative_prediction, xt, t)
        negative_weight = (negative_x0_prediction.detach().double() - x0.double()).abs().mean(dims, keepdim=True)
        negative_loss = ((negative_x0_prediction - x0) ** 2 / negative_weight.clip(1e-5)).mean(dim=dims)
        ori_policy_loss = r * positive_loss / beta + (1.0 - r) * negative_loss / beta
        policy_loss = (ori_policy_loss * adv_clip_max).mean()
        kl_div_loss = ((forward_prediction - ref_forward_prediction) ** 2).mean(dim=dims)
        loss = (policy_loss + kl_beta * torch.mean(kl_div_loss)) / n
        grad = grad + torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
        total += float(loss.detach())
    return total, grad, x0, largest


@pytest.mark.parametrize("chain", ["epsilon", "v_prediction", "flow"])
def test_loss_and_gradient_equal_diffusion_nft(chain, request):
    backbone = request.getfixturevalue("wan") if chain == "flow" else _toy(chain)
    params = backbone.trainable_parameters()
    beta, kl_beta, adv_clip_max, global_std, fraction, seed = 0.7, 0.3, 1.5, chain == "flow", 0.8, 9
    estimator = NFT(beta, kl_beta, adv_clip_max, global_std, fraction, decay_type=1)
    # v_old: an earlier policy (theta moved since); the update to come first blends theta in
    # with the decay after 300 updates, min(0.3, 0.5), as the reference does after each epoch.
    g = torch.Generator().manual_seed(5)
    earlier = [p.detach() + 0.05 * torch.randn(p.shape, generator=g) for p in params]
    estimator.load_state_dict({"old": earlier, "calls": 300, "decay": 0.0})
    decay = return_decay(300, 1)
    old = [o * decay + p.detach() * (1.0 - decay) for o, p in zip(earlier, params)]
    for p in params:
        p.grad = None
    estimate = estimator.estimate(backbone, DistanceReward(), PROMPTS, torch.Generator().manual_seed(seed))
    got = flat_grad(params).clone()
    for p in params:
        p.grad = None

    with torch.enable_grad():
        loss, expected, x0, largest = nft_loss(
            backbone, old, PROMPTS, seed, beta, kl_beta, adv_clip_max, global_std, fraction
        )
    # the EMA written as the reference writes it, o * decay + theta * (1 - decay): bitwise
    assert estimate.stats["ema_decay"] == decay and all(torch.equal(a, b) for a, b in zip(estimator.old, old))
    assert torch.equal(estimate.rewards, DistanceReward()(backbone.decode(x0), PROMPTS).float())
    # Both sides make the same model calls on the same batch and the same elementwise and mean
    # ops (measured: the gradients bitwise equal); they part in the advantages (numpy's float64
    # std against torch's, an ulp) and in how the loss is added up: every term is >= 0, the
    # policy part float64 on both sides, the reference rounds beta_KL x KL to float32 once
    # (EPS) and each side adds the steps in float64. So the loss within EPS + float64 roundings,
    # relative (measured <= 3e-11 of the loss, allowed 1.2e-7); the gradient, should an
    # advantage's ulp flip a float32 rounding, within the denoiser's depth x sqrt(fan-in)
    # (measured 0). The KL term left out moves the loss by 3e-5 to 9e-4 of itself, a step by ~1/n.
    value = estimate.stats["policy_loss"] + kl_beta * estimate.stats["kl"]
    rtol = EPS + sum_atol(4 * int(estimate.stats["trained_steps"]), 1.0, EPS64)
    as_float64 = torch.tensor([value, loss], dtype=torch.float64)
    assert_max_abs(as_float64[0], as_float64[1], rtol * abs(loss), f"{chain} DiffusionNFT loss")
    assert_rel_close(got, expected, network_rtol(*layers(backbone.denoiser)), f"{chain} DiffusionNFT gradient")
    assert estimate.stats["kl"] > 0 and estimate.stats["old_deviate"] > 0
    assert estimate.stats["trained_steps"] == int(backbone.num_steps * fraction)
    if chain == "v_prediction":  # the sampler's x0 clip at 0.5 would have changed the loss
        assert largest > 0.5


def test_old_policy_follows_return_decay_once_per_update():
    """With gradient accumulation the EMA moves once per optimizer update (every grad_accum calls)."""
    backbone = _toy("epsilon")
    params = backbone.trainable_parameters()
    estimator = NFT(decay_type=1, grad_accum=2, kl_beta=0.0)
    expected = None
    for call in range(6):
        if call % 2 == 0 and call:  # an optimizer update happened between calls 2k-1 and 2k
            _perturb(backbone, 0.01, seed=call)
            d = return_decay(call // 2, 1)
            expected = [o * d + p.detach() * (1 - d) for o, p in zip(expected, params)]
        estimator.estimate(backbone, DistanceReward(), PROMPTS, torch.Generator().manual_seed(call))
        if expected is None:
            expected = [p.detach().clone() for p in params]
        assert all(torch.equal(a, b) for a, b in zip(estimator.old, expected)), call
    for p in params:
        p.grad = None
