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
from tolerances import EPS64, assert_max_abs, assert_rel_close, layers, network_rtol, sum_atol

from rlr_video.backbones import load_backbone
from rlr_video.backbones.toy import ToyBackbone
from rlr_video.chain import rollout
from rlr_video.estimators.grpo import GRPO

pytestmark = pytest.mark.usefixtures("single_thread")

# Odd group sizes, three groups: 2 + 3 + 1 videos (the prompt alone gets advantage 0).
PROMPTS = ["a red circle", "a blue square", "a red circle", "a blue square", "a blue square", "a green ring"]


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


def log_prob_size(prev, mean, std) -> float:
    """The largest video's mean |term| of that log-density: what its float32 mean rounds at."""
    terms = (prev - mean) ** 2 / (2 * std**2) + abs(math.log(float(std))) + 0.5 * math.log(2 * math.pi)
    return float(terms.flatten(1).mean(1).max())


def flow_grpo_loss(backbone, traj, cond, steps, advantages, old_log_probs, clip_range, adv_clip_max, beta):
    """The mean over trained steps of Flow-GRPO's per-step loss (policy + beta * KL)."""
    transition = backbone.transition
    total, size = 0.0, 0.0
    adv = torch.clamp(advantages.float(), -adv_clip_max, adv_clip_max)
    for t in steps:
        x, prev = traj.latents[t], traj.latents[t - 1]
        mean, std = transition.mean_std(backbone.predict(x, t, cond), t, x)
        log_prob = mean_log_prob(prev, mean, std)
        size = max(size, log_prob_size(prev, mean.detach(), std))
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
    return total, size


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
                loss, size = flow_grpo_loss(
                    backbone, traj, cond, steps, advantages, old, clip_range, adv_clip_max, beta
                )
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            expected.append((loss.detach(), torch.cat([g.flatten() for g in grads]), size))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)

    # The same model calls on the same batch; the two sides differ in how they reduce. Each
    # log-prob is a float32 mean over the latent's N elements written otherwise: within
    # sum_atol(N, mean |term|) of the other side's, so log p - log p_old, each ratio's log, within
    # twice that (delta). The loss, a mean over videos and steps of |A| r (r ~ 1) and beta KL terms,
    # moves by |A| r delta plus its own sums' rounding; the gradient, besides the ratios, goes
    # back through the denoiser in another order (the steps in one graph against one backward per
    # step): its depth x sqrt(fan-in). Measured: loss <= 2e-8 of 2e-4 allowed; gradient 1.1e-6 of
    # 1.6e-4 (Wan), 8e-8 of 1.8e-4 (toy). The KL left out moves the loss by 1.3e-3 (Wan) to 4e-2
    # (toy) and the gradient by 0.4-0.9; a binding clip not applied moves the toy's gradient by 0.1.
    elements = traj.latents[0][0].numel()
    for estimate, grad, (loss, grad_ref, size) in zip((first, second), (grad_first, grad_second), expected):
        delta = 2 * sum_atol(elements, size)
        got = estimate.stats["policy_loss"] + beta * estimate.stats["kl"]
        largest = adv_clip_max * (1 + clip_range) + beta * estimate.stats["kl"]  # a term of the loss
        atol = adv_clip_max * (1 + clip_range) * delta + sum_atol(elements + len(PROMPTS) + len(steps), largest)
        assert_max_abs(torch.tensor(got, dtype=torch.float64), loss, atol, f"{chain} Flow-GRPO loss")
        rtol = network_rtol(*layers(backbone.denoiser)) + delta
        assert_rel_close(grad, grad_ref, rtol, f"{chain} Flow-GRPO gradient")
        assert estimate.stats["kl"] > 0 and estimate.stats["trained_steps"] == len(steps)
    assert first.stats["clip_fraction"] == 0 and first.stats["approx_kl"] == 0  # on-policy: ratio exactly 1
    assert 0 < second.stats["clip_fraction"] < 1, second.stats["clip_fraction"]
    assert second.stats["approx_kl"] > 0
    assert first.stats["zero_std_ratio"] == 1 / 3  # the green ring is alone: 1 of 3 groups, one division
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
    # On policy the ratio is exactly 1 (log p - log p_old of the same tensor): the surrogate's
    # gradient differs only in going back through the denoiser in another order (one graph for
    # every step against one backward per step), by its depth x sqrt(fan-in) bound. Measured 1e-6
    # of 3e-5 (Wan) and 2e-7 of 5e-6 (toy).
    assert_rel_close(got, expected, network_rtol(*layers(backbone.denoiser)), f"{chain} on-policy GRPO gradient")
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
            # the rollout's own call on the same batch, plus std 0 times its noise: bitwise
            assert torch.equal(traj.latents[t - 1], mean)
        estimator._batch = None
    assert starts == {1, 2, 3}  # random.randint(1, 5 - 2)
    _zero_grads(toy)


def test_group_advantages_are_flow_grpos():
    from rlr_video.estimators.common import group_advantages

    rewards = torch.tensor([0.3, 1.0, -0.2, 0.5, 0.5, 2.0, 0.7])
    prompts = ["a", "b", "a", "b", "b", "c", "a"]

    def atol(r: torch.Tensor, expected: torch.Tensor, std: float) -> float:
        # numpy's float64 mean and std against torch's, each a sum of at most 7 terms in another
        # order (sum_atol at float64 eps), the std's conditioned by max|r| / std; A = (r - mean) /
        # (std + 1e-4) carries the mean's error over std and the std's relative error times |A|.
        # A ddof of 1, or the 1e-4 left out (2e-4 of A here), moves A by far more.
        return sum_atol(len(r) + 4, float(r.abs().max()) / std * (1 + float(expected.abs().max())), EPS64)

    names = np.array(prompts)
    smallest = min(float(np.std(rewards.double().numpy()[names == p])) for p in ("a", "b"))  # the batch's is more
    for global_std in (False, True):
        expected = flow_grpo_advantages(rewards, prompts, global_std)
        ours = group_advantages(rewards, prompts, global_std)
        assert_max_abs(ours, expected, atol(rewards.double(), expected, smallest), f"advantages, {global_std=}")
    alone = ["a", "b", "c"]  # k = 1: Flow-GRPO normalises over the batch
    r = rewards[:3].double()
    expected = (r - r.mean()) / (r.numpy().std() + 1e-4)
    ours = group_advantages(rewards[:3], alone)
    assert_max_abs(ours, expected, atol(r, expected, float(r.numpy().std())), "advantages of lone prompts")


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
