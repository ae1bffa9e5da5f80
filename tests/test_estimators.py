"""Estimator behaviour beyond unbiasedness: diagnostics, call counts, bad input, NaN rewards."""

import math

import pytest
import torch
from estimator_fixtures import DistanceReward, flat_grad
from tolerances import EPS, assert_max_abs, assert_rel_close, sum_atol

from rlr_video.backbones.toy import ToyBackbone
from rlr_video.estimators import LR, RLR, FullBP, RewardBaseline, StartSampler, TruncatedBP
from rlr_video.estimators.perturb import ParamPerturbation

PROMPTS = ["a red circle moving left", "a blue square moving up", "a red circle moving left"]


@pytest.fixture
def backbone():
    return ToyBackbone.create(num_steps=6)


def _run(estimator, backbone, reward=None, seed=0):
    for p in backbone.trainable_parameters():
        p.grad = None
    return estimator.estimate(backbone, reward or DistanceReward(), PROMPTS, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "estimator, forward, backward",
    [
        (RLR(h=2), 6 + 1 + 2 + 3, 1 + 2 + 3),  # rollout, FO, HO (h calls), ZO on |C| = 5 - 2 steps
        (RLR(h=1, zo_samples=2), 6 + 1 + 1 + 2, 1 + 1 + 2),
        (RLR(h=2, zo_samples=9), 6 + 1 + 2 + 3, 1 + 2 + 3),  # more samples than steps left: all of them
        (RLR(h=3, zo="param_es"), 6 + 1 + 3, 1 + 3),  # ES is forward-only, inside the rollout
        (RLR(h=2, zo="none"), 6 + 1 + 2, 1 + 2),
        (RLR(h=1, fo_steps=3), 6 + 3 + 1 + 2, 3 + 1 + 2),
        (FullBP(), 6, 6),
        (TruncatedBP(K=2), 6, 2),
        (LR(), 6 + 6, 6),
    ],
    ids=["rlr", "rlr-sampled", "rlr-oversampled", "rlr-es", "rlr-none", "rlr-fo3", "full", "trunc", "lr"],
)
def test_diagnostics_and_call_counts(backbone, estimator, forward, backward):
    estimate = _run(estimator, backbone)
    stats = estimate.stats
    assert not estimate.skipped and estimate.fresh
    assert stats["calls_forward"] == forward and stats["calls_backward"] == backward
    rewards = DistanceReward()(torch.zeros(1, 1, 3, 1, 1), [""])  # the reward's scale, for its dtype
    assert estimate.rewards.shape == (len(PROMPTS),) and estimate.rewards.dtype == rewards.dtype
    assert math.isfinite(estimate.reward_mean) and list(estimate.terms) == ["distance"]
    assert stats["grad_norm"] > 0
    # grad_norm sums the squares in float64, torch's norm in float32 in its own order: a sum of
    # n positive terms, within (n - 1) eps of it (sum_atol), halved by the square root
    grad = flat_grad(backbone.trainable_parameters())
    assert math.isclose(stats["grad_norm"], float(grad.norm()), rel_tol=sum_atol(grad.numel(), 1.0) / 2)
    if isinstance(estimator, RLR):
        assert stats["fo_norm"] > 0 and stats["ho_norm"] > 0
        assert (stats["zo_norm"] > 0) == (estimator.zo != "none")


def test_estimates_accumulate_into_existing_grads(backbone):
    stats = _run(RLR(h=2), backbone, seed=3).stats
    once = flat_grad(backbone.trainable_parameters()).clone()
    RLR(h=2).estimate(backbone, DistanceReward(), PROMPTS, torch.Generator().manual_seed(3))
    # The same three parts (FO, HO, ZO) again, added one by one onto their first sum instead of
    # doubling it: float32 rounding of four-term sums (sum_atol) whose terms' norms add to at most
    # twice the parts' norms: 4e-7 of the gradient, measured 3e-8; the smallest part (FO) lost or
    # added twice moves it by 2e-2.
    parts = stats["fo_norm"] + stats["ho_norm"] + stats["zo_norm"]
    assert_rel_close(
        flat_grad(backbone.trainable_parameters()),
        2 * once,
        sum_atol(4, 2 * parts) / float(2 * once.norm()),
        "two estimates accumulated against twice one",
    )


class NaNReward:
    name, differentiable = "nan", True

    def __call__(self, frames, prompts):
        r = frames.mean(dim=(1, 2, 3, 4))
        return torch.where(torch.arange(len(r)) == 1, torch.full_like(r, float("nan")), r)


@pytest.mark.parametrize(
    "estimator", [RLR(h=2), FullBP(), LR(), TruncatedBP()], ids=["rlr", "full_bp", "lr", "truncated_bp"]
)
def test_nonfinite_reward_skips_without_touching_grads(backbone, estimator):
    params = backbone.trainable_parameters()
    for p in params:
        p.grad = torch.ones_like(p)
    weights = [p.detach().clone() for p in params]
    estimate = estimator.estimate(backbone, NaNReward(), PROMPTS, torch.Generator().manual_seed(0))
    assert estimate.skipped and estimate.stats["nonfinite_rewards"] == 1.0
    assert torch.isnan(estimate.rewards[1]) and torch.isfinite(estimate.rewards[[0, 2]]).all()
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in params)
    assert all(torch.equal(p, w) for p, w in zip(params, weights))


def test_clear_errors(backbone):
    class Score:
        name, differentiable = "score", False

        def __call__(self, frames, prompts):
            return frames.mean(dim=(1, 2, 3, 4))

    with pytest.raises(ValueError, match="'score' is not"):
        _run(RLR(), backbone, Score())
    with pytest.raises(ValueError, match="zo='sgd'"):
        RLR(zo="sgd")
    with pytest.raises(ValueError, match="h=6 does not fit a chain of 6 steps with 1 first-order"):
        _run(RLR(h=6), backbone)
    deterministic = ToyBackbone.create(num_steps=4, eta=0.0)
    with pytest.raises(ValueError, match="noise std 0; use eta > 0"):
        _run(RLR(h=1), deterministic)
    with pytest.raises(ValueError, match="needs ppo_clip"):
        LR(inner_epochs=2)
    with pytest.raises(ValueError, match=r"j range \(9, 12\) has no valid start"):
        _run(RLR(h=1, j=(9, 12)), backbone)


@pytest.mark.parametrize("estimator", [RLR(h=2), FullBP(), LR()], ids=["rlr", "full", "lr"])
def test_a_reward_must_give_one_score_per_video_and_prompts_a_list(backbone, estimator):
    class Column(DistanceReward):  # (B, 1) would broadcast against the (B,) advantages: a wrong gradient
        name = "column"

        def __call__(self, frames, prompts):
            return super().__call__(frames, prompts)[:, None]

    with pytest.raises(ValueError, match=r"reward 'column' returned \(3, 1\); .* shape \(3,\)"):
        _run(estimator, backbone, Column())
    with pytest.raises(TypeError, match="a non-empty list of strings, one per video"):
        estimator.estimate(backbone, DistanceReward(), "a red circle", torch.Generator().manual_seed(0))


def test_ppo_clip_is_reinforce_on_policy_and_clips_when_reused(backbone):
    _run(LR(), backbone, seed=4)
    reinforce = flat_grad(backbone.trainable_parameters()).clone()
    ppo = LR(ppo_clip=1e-4, inner_epochs=2)
    _run(ppo, backbone, seed=4)
    # On policy the ratio is exp(0) = 1; the surrogate scales each step's term by dims and its
    # backward divides by dims again: a few roundings per term, eps each, over num_steps terms.
    # Measured equal; a ratio not scaled back is dims times off, a clipped one zero.
    rtol = 4 * EPS * backbone.num_steps
    assert_rel_close(flat_grad(backbone.trainable_parameters()), reinforce, rtol, "PPO on policy against REINFORCE")
    with torch.no_grad():  # move the policy, then reuse the batch: ratios leave the clip range
        for p in backbone.trainable_parameters():
            p.add_(0.05)
    reused = _run(ppo, backbone, seed=999)
    assert reused.stats["calls_forward"] == 6  # no new rollout: the stored batch was reused
    assert not reused.fresh and reused.stats["clip_fraction"] > 0


def test_param_perturbation_restores_weights_exactly(backbone):
    params = backbone.trainable_parameters()
    before = [p.detach().clone() for p in params]
    perturb = ParamPerturbation(params, 0.3, {4: 123})
    with perturb.at(4):
        assert not torch.equal(params[0], before[0])
    with perturb.at(3):  # not a perturbed step
        assert torch.equal(params[0], before[0])
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert all(torch.equal(u, v) for u, v in zip(perturb.direction(4), perturb.direction(4)))


def test_reward_baselines():
    # small integers and halves, means over n - 1 = 2 videos, decay 0.5: every float op is exact
    r = torch.tensor([1.0, 2.0, 6.0])
    loo = RewardBaseline("loo")(r, ["a", "b", "c"])
    assert torch.equal(loo, torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5]))
    running = RewardBaseline("running", decay=0.5)
    first = running(r, ["a", "a", "b"])
    assert torch.equal(first, loo)  # unseen prompts fall back to leave-one-out
    second = running(torch.tensor([3.0, 3.0, 3.0]), ["a", "b", "c"])
    # after the first batch: a -> 0.5 * 1 + 0.5 * 2 = 1.5, b -> 6; c is new (leave-one-out 3)
    assert torch.equal(second, torch.tensor([1.5, -3.0, 0.0]))
    assert torch.equal(RewardBaseline("none")(r, ["a"] * 3), r)


def test_grad_norm_sampler_prefers_large_norms_and_ranges_clip():
    sampler = StartSampler("grad_norm", temperature=0.5)
    for j, norm in [(2, 1.0), (3, 10.0), (4, 1.0)]:
        sampler.observe(j, norm)
    js, probs = sampler.probabilities(num_steps=5, h=2)
    # a float32 softmax: exp (an ulp), a sum of n terms and a division per probability, then n
    # more terms summed here; (2n + 2) eps covers them (math.isclose's default 1e-9 did not)
    assert js == [2, 3, 4] and probs.argmax() == 1
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=0, abs_tol=(2 * len(probs) + 2) * EPS)
    g = torch.Generator().manual_seed(0)
    assert {StartSampler((1, 3)).draw(10, 2, g) for _ in range(50)} == {2, 3}


def test_group_baseline_leaves_out_the_video_itself_within_its_prompt():
    rewards = torch.tensor([1.0, 3.0, 10.0, 20.0, 30.0, 7.0])
    prompts = ["a", "a", "b", "b", "b", "c"]
    advantages = RewardBaseline("group")(rewards, prompts)
    # a: against the other a; b: against the mean of the other two b; c alone: batch leave-one-out
    expected = torch.tensor([1 - 3, 3 - 1, 10 - 25, 20 - 20, 30 - 15, 7 - (71 - 7) / 5])
    # means of at most the 6 rewards (71 in all) in float32, against float64 (sum_atol: 4e-5);
    # a video in its own baseline moves its advantage by >= 1
    assert_max_abs(advantages, expected, sum_atol(len(rewards), float(rewards.abs().sum())), "group advantages")


def test_state_baseline_refuses_what_it_cannot_do():
    from estimator_fixtures import LinearGaussianBackbone, QuadraticReward

    with pytest.raises(ValueError, match="loo or group"):
        RLR(state_baseline=True, baseline="running")
    with pytest.raises(ValueError, match="loo or group"):
        LR(state_baseline=True, baseline="none")
    backbone = LinearGaussianBackbone([0.3, 0.5, 0.6])
    reward = QuadraticReward(torch.zeros(3))
    with pytest.raises(ValueError, match="at least 3 videos"):
        RLR(h=1, state_baseline=True).estimate(backbone, reward, ["a", "b"], torch.Generator().manual_seed(0))
    backbone.transition.predict_x0 = None  # a user's transition without a clean estimate
    with pytest.raises(ValueError, match="predict_x0"):
        RLR(h=1, state_baseline=True).estimate(backbone, reward, ["a"] * 4, torch.Generator().manual_seed(0))


def test_a_plain_function_is_a_reward(backbone):
    # The README's promise: any callable (frames, prompts) -> (B,). It is taken as differentiable.
    def redness(frames, prompts):
        return DistanceReward()(frames, prompts)

    for estimator in (RLR(h=2), FullBP()):
        wrapped = _run(estimator, backbone, redness)
        plain = flat_grad(backbone.trainable_parameters()).clone()
        same = _run(estimator, backbone, DistanceReward())  # same draws, same estimate
        assert same.stats == wrapped.stats and torch.equal(same.rewards, wrapped.rewards)
        assert torch.equal(flat_grad(backbone.trainable_parameters()), plain) and plain.abs().sum() > 0
    with pytest.raises(TypeError, match="a reward is a callable .* got int"):
        _run(RLR(h=2), backbone, 3)


def test_state_values_explain_what_they_can_and_the_rest_is_left_one_out():
    values = torch.tensor([0.1, 0.4, 0.2, 0.9, 0.5])
    # The advantages are differences of float32 sums over the 5 videos (slopes, means): within
    # sum_atol(5, sum |R|) ~ 3e-6 of exact; measured <= 2.4e-7. The effects tested are >= 0.1.
    # R fully explained by b (slope 0.8, offset 1): nothing is left to reward or punish
    explained = 0.8 * values + 1
    advantages = RewardBaseline("loo")(explained, ["p"] * 5, values)
    assert_max_abs(advantages, torch.zeros(5), sum_atol(5, float(explained.abs().sum())), "fully explained R")
    # a slope above 1 is capped: b is subtracted once, the rest is left to the advantage
    steep = RewardBaseline("loo")(3 * values, ["p"] * 5, values)
    atol = sum_atol(5, float(3 * values.sum()))
    assert_max_abs(steep, RewardBaseline("loo")(2 * values, ["p"] * 5), atol, "capped slope")
    # b constant: no slope to fit, the plain leave-one-out advantages
    rewards = torch.tensor([1.0, 2.0, 4.0, 0.0, 3.0])
    flat = RewardBaseline("loo")(rewards, ["p"] * 5, torch.full((5,), 0.3))
    atol = sum_atol(5, float(rewards.abs().sum()))
    assert_max_abs(flat, RewardBaseline("loo")(rewards, ["p"] * 5), atol, "constant b")
