"""GRPO is Flow-GRPO's training step: loss and gradient against a re-implementation of its formulas.

The re-implementation below follows yifan123/flow_grpo ``scripts/train_sd3.py`` /
``scripts/train_wan2_1.py`` (the "grpo logic" block), ``flow_grpo/stat_tracking.py``
(``PerPromptStatTracker.update``) and ``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py`` (the
log-prob, averaged over the latent elements), written with numpy and plain tensor algebra. The
transitions' means and stds are the chain's (tested against Flow-GRPO and diffusers in
tests/test_transitions.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from backbone_fixtures import tiny_model_dir, tiny_options
from estimator_fixtures import DistanceReward, flat_grad

from rlr_video.backbones import load_backbone
from rlr_video.backbones.toy import ToyBackbone
from rlr_video.chain import rollout
from rlr_video.estimators.grpo import GRPO

pytestmark = pytest.mark.usefixtures("single_thread")

# Odd group sizes, three groups: 2 + 3 + 1 videos (the prompt alone gets advantage 0).
PROMPTS = ["a red circle", "a blue square", "a red circle", "a blue square", "a blue square", "a green ring"]
F32 = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def toy():
    """DDIM-eta (eps-prediction) on an awkward latent: 3 channels, 3 frames of 5x7."""
    backbone = ToyBackbone.create(num_steps=7, eta=1.0, latent_shape=(3, 3, 5, 7), seed=3)
    _perturb(backbone, 0.01, seed=11)  # away from the reference (the initial weights): the KL is not 0
    return backbone


@pytest.fixture(scope="module")
def wan():
    """The flow-matching SDE on a tiny Wan 2.1 (real diffusers classes), LoRA moved off zero."""
    backbone = load_backbone(tiny_model_dir("wan"), **tiny_options("wan", num_steps=5, height=32, width=16))
    _perturb(backbone, 0.05, seed=12)  # LoRA B starts at 0: the model would equal its reference
    return backbone


def _perturb(backbone, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backbone.trainable_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _zero_grads(backbone) -> None:
    for p in backbone.trainable_parameters():
        p.grad = None


def flow_grpo_advantages(rewards: torch.Tensor, prompts, global_std: bool) -> torch.Tensor:
    """PerPromptStatTracker.update(type='grpo') as written there: numpy, float64, np.std (ddof 0)."""
    r = rewards.double().numpy()
    names = np.array(prompts)
    out = np.zeros_like(r)
    for prompt in np.unique(names):
        group = r[names == prompt]
        std = (np.std(r) if global_std else np.std(group)) + 1e-4
        out[names == prompt] = (group - np.mean(group)) / std
    return torch.from_numpy(out)


def mean_log_prob(prev, mean, std):
    """sde_step_with_logprob's log-prob: the Gaussian log-density averaged over all but the batch."""
    lp = -((prev - mean) ** 2) / (2 * std**2) - torch.log(std) - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi)))
    return lp.mean(dim=tuple(range(1, lp.ndim)))


def flow_grpo_loss(backbone, traj, cond, steps, advantages, old_log_probs, clip_range, adv_clip_max, beta):
    """The mean over trained steps of Flow-GRPO's per-step loss (policy + beta * KL)."""
    transition = backbone.transition
    total = 0.0
    adv = torch.clamp(advantages.float(), -adv_clip_max, adv_clip_max)
    for t in steps:
        x, prev = traj.latents[t], traj.latents[t - 1]
        mean, std = transition.mean_std(backbone.predict(x, t, cond), t, x)
        log_prob = mean_log_prob(prev, mean, std)
        ratio = torch.exp(log_prob - old_log_probs[t])
        unclipped_loss = -adv * ratio
        clipped_loss = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
        loss = torch.mean(torch.maximum(unclipped_loss, clipped_loss))
        if beta > 0:
            with torch.no_grad(), backbone.base_model():
                ref_mean, _ = transition.mean_std(backbone.predict(x, t, cond), t, x)
            dims = tuple(range(1, x.ndim))
            kl_loss = ((mean - ref_mean) ** 2).mean(dim=dims, keepdim=True) / (2 * std**2)
            loss = loss + beta * torch.mean(kl_loss)
        total = total + loss / len(steps)
    return total


def _old_log_probs(backbone, traj, cond, steps):
    with torch.no_grad():
        out = {}
        for t in steps:
            x = traj.latents[t]
            mean, std = backbone.transition.mean_std(backbone.predict(x, t, cond), t, x)
            out[t] = mean_log_prob(traj.latents[t - 1], mean, std)
        return out


@pytest.mark.parametrize("chain", ["toy", "wan"])
@pytest.mark.parametrize("global_std", [False, True])
def test_loss_and_gradient_equal_flow_grpo_on_and_off_policy(chain, global_std, request):
    """Update 1 is on-policy (ratio 1); the weights then move and update 2 reuses the batch, so
    ratios differ from 1 and some are clipped. Both updates' loss and gradient equal the
    re-implementation's, computed on the same trajectory (same seed)."""
    backbone = request.getfixturevalue(chain)
    clip_range, adv_clip_max, beta = 2e-3, 1.3, 0.7  # a small clip and adv_clip_max: both bind
    estimator = GRPO(clip_range, adv_clip_max, beta, global_std, timestep_fraction=0.8, inner_epochs=2)
    reward, seed = DistanceReward(), 5
    params = backbone.trainable_parameters()
    saved = [p.detach().clone() for p in params]
    try:
        _zero_grads(backbone)
        first = estimator.estimate(backbone, reward, PROMPTS, torch.Generator().manual_seed(seed))
        grad_first = flat_grad(params).clone()

        cond = backbone.encode(PROMPTS)
        traj = rollout(backbone, cond, torch.Generator().manual_seed(seed), len(PROMPTS))
        rewards = reward(backbone.decode(traj.sample), PROMPTS)
        assert torch.equal(first.rewards, rewards.float())  # the same trajectory
        T = backbone.num_steps
        steps = [t for t in range(T, 0, -1) if backbone.transition.noise_std(t) > 0][: int(T * 0.8)]
        advantages = flow_grpo_advantages(rewards, PROMPTS, global_std)
        old = _old_log_probs(backbone, traj, cond, steps)

        expected = []
        for update in range(2):
            if update == 1:  # move the weights: the reused batch is now off-policy
                _perturb(backbone, 0.2 if chain == "wan" else 0.002, seed=99)
                _zero_grads(backbone)
                second = estimator.estimate(backbone, reward, PROMPTS, torch.Generator().manual_seed(seed))
                assert not second.fresh and torch.equal(second.rewards, first.rewards)
                grad_second = flat_grad(params).clone()
            for p in params:
                p.grad = None
            with torch.enable_grad():
                loss = flow_grpo_loss(backbone, traj, cond, steps, advantages, old, clip_range, adv_clip_max, beta)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            expected.append((loss.detach(), torch.cat([g.flatten() for g in grads])))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)

    # Same sums in another order: float32 rounding, at most ~eps per element of the latent the
    # log-prob averages over (plus the model's own sums), relative to the loss and gradient norms.
    elements = traj.latents[0][0].numel()
    tol = 50 * F32 * elements
    for estimate, grad, (loss, grad_ref) in ((first, grad_first, expected[0]), (second, grad_second, expected[1])):
        got = estimate.stats["policy_loss"] + beta * estimate.stats["kl"]
        assert abs(got - float(loss)) <= tol * max(1.0, abs(float(loss))), (got, float(loss))
        assert float((grad - grad_ref).norm()) <= tol * float(grad_ref.norm()), chain
        assert estimate.stats["kl"] > 0 and estimate.stats["trained_steps"] == len(steps)
    assert first.stats["clip_fraction"] == 0 and first.stats["approx_kl"] == 0  # on-policy: ratio exactly 1
    assert 0 < second.stats["clip_fraction"] < 1, second.stats["clip_fraction"]
    assert second.stats["approx_kl"] > 0
    assert first.stats["zero_std_ratio"] == pytest.approx(1 / 3)  # the green ring is alone
    assert first.stats["groups"] == 3


@pytest.mark.parametrize("chain", ["toy", "wan"])
def test_on_policy_without_kl_is_group_normalised_reinforce(chain, request):
    """beta = 0, one update: -(1/n) sum_t mean_i A_i grad log p_t(i), log p averaged over elements
    (REINFORCE with Flow-GRPO's advantages; the clip is inactive at ratio 1)."""
    backbone = request.getfixturevalue(chain)
    estimator = GRPO(clip_range=1e-4, beta=0.0, timestep_fraction=1.0)
    params = backbone.trainable_parameters()
    _zero_grads(backbone)
    estimator.estimate(backbone, DistanceReward(), PROMPTS, torch.Generator().manual_seed(8))
    got = flat_grad(params)

    cond = backbone.encode(PROMPTS)
    traj = rollout(backbone, cond, torch.Generator().manual_seed(8), len(PROMPTS))
    adv = flow_grpo_advantages(DistanceReward()(backbone.decode(traj.sample), PROMPTS), PROMPTS, False).float()
    steps = [t for t in range(backbone.num_steps, 0, -1) if backbone.transition.noise_std(t) > 0]
    with torch.enable_grad():
        surrogate = 0.0
        for t in steps:
            x = traj.latents[t]
            mean, std = backbone.transition.mean_std(backbone.predict(x, t, cond), t, x)
            surrogate = surrogate - (adv * mean_log_prob(traj.latents[t - 1], mean, std)).mean() / len(steps)
        expected = torch.cat([g.flatten() for g in torch.autograd.grad(surrogate, params)])
    tol = 50 * F32 * traj.latents[0][0].numel()
    assert float((got - expected).norm()) <= tol * float(expected.norm())
    _zero_grads(backbone)


def test_sde_window_is_the_only_noise_and_the_only_training(toy):
    """Flow-GRPO-Fast: the window's steps inject noise and are trained; every other step is the
    deterministic chain (DDIM eta 0 here); the window's start is uniform in [a, b - size]."""
    estimator = GRPO(beta=0.0, sde_window_size=2, sde_window_range=(1, 5), inner_epochs=2)
    T, starts = toy.num_steps, set()
    quiet = toy.transition.deterministic()
    for seed in range(12):
        _zero_grads(toy)
        estimate = estimator.estimate(toy, DistanceReward(), PROMPTS, torch.Generator().manual_seed(seed))
        batch = estimator._batch  # kept for the second inner epoch
        steps, traj = batch.steps, batch.traj
        assert estimate.stats["trained_steps"] == 2 and steps == [steps[0], steps[0] - 1]
        starts.add(T - steps[0])
        cond = toy.encode(PROMPTS)
        for t in range(T, 0, -1):
            if t in steps:
                assert traj.stds[t] > 0
                continue
            assert traj.stds[t] == 0.0
            mean, _ = quiet.mean_std(toy.predict(traj.latents[t], t, cond), t, traj.latents[t])
            assert torch.allclose(traj.latents[t - 1], mean, rtol=0, atol=1e-6)
        estimator._batch = None
    assert starts == {1, 2, 3}  # random.randint(1, 5 - 2)
    _zero_grads(toy)


def test_group_advantages_are_flow_grpos():
    from rlr_video.estimators.common import group_advantages

    rewards = torch.tensor([0.3, 1.0, -0.2, 0.5, 0.5, 2.0, 0.7])
    prompts = ["a", "b", "a", "b", "b", "c", "a"]
    for global_std in (False, True):
        expected = flow_grpo_advantages(rewards, prompts, global_std)
        assert torch.allclose(group_advantages(rewards, prompts, global_std), expected, rtol=1e-12, atol=0)
    alone = ["a", "b", "c"]  # k = 1: Flow-GRPO normalises over the batch
    r = rewards[:3].double()
    expected = (r - r.mean()) / (r.numpy().std() + 1e-4)
    assert torch.allclose(group_advantages(rewards[:3], alone), expected, rtol=1e-12, atol=0)


def test_base_model_is_the_model_without_its_fine_tuning(toy, wan):
    """The KL's reference: Wan with its LoRA's contribution removed (B = 0 computes the base model),
    the toy with its weights as built; each back to the fine-tuned model on exit, LoRA trainable."""
    x = torch.randn(2, *wan.latent_shape, generator=torch.Generator().manual_seed(0))
    cond = wan.encode(PROMPTS[:2])
    tuned = wan.predict(x, 3, cond)
    with torch.no_grad(), wan.base_model():
        base = wan.predict(x, 3, cond)
    lora_b = [p for n, p in wan.denoiser.named_parameters() if ".lora_B." in n]
    saved = [p.detach().clone() for p in lora_b]
    with torch.no_grad():
        for p in lora_b:
            p.zero_()
        zeroed = wan.predict(x, 3, cond)
        for p, s in zip(lora_b, saved):
            p.copy_(s)
    assert torch.equal(base, zeroed) and not torch.equal(base, tuned)
    assert torch.equal(wan.predict(x, 3, cond), tuned)
    assert all(p.requires_grad for p in wan.trainable_parameters())

    fresh = ToyBackbone.create(num_steps=7, eta=1.0, latent_shape=(3, 3, 5, 7), seed=3)
    y = torch.randn(2, 3, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    toy_cond = toy.encode(PROMPTS[:2])
    with toy.base_model():
        assert torch.equal(toy.predict(y, 4, toy_cond), fresh.predict(y, 4, toy_cond))
    assert not torch.equal(toy.predict(y, 4, toy_cond), fresh.predict(y, 4, toy_cond))
