"""Every unbiased estimator's mean agrees with the true gradient within its standard error;
the biased ones (truncated backprop, RLR without ZO) are caught.

Fixed seeds: each test is deterministic, and a z-score of 4 over 16-25 coordinates is a
false alarm about once in a thousand seeds, while the biased estimators score far above 8.
"""

import pytest
import torch
from estimator_fixtures import (
    DistanceReward,
    LinearGaussianBackbone,
    QuadraticReward,
    draws,
    z_scores,
)

from rlr_video.backbones.toy import ToyBackbone
from rlr_video.estimators import LR, RLR, FullBP, TruncatedBP

UNBIASED_Z = 4.0
BIASED_Z = 8.0
STDS = [0.3, 0.5, 0.6, 0.7, 0.8]  # step 1 ... step 5
TARGET = torch.tensor([0.5, -0.2, 0.1])


@pytest.fixture(scope="module")
def linear():
    backbone = LinearGaussianBackbone(STDS)
    objective = backbone.exact_objective(TARGET)
    truth = torch.cat([g.flatten() for g in torch.autograd.grad(objective, backbone.trainable_parameters())])
    return backbone, QuadraticReward(TARGET), truth.double()


def _check(samples, truth, truth_se=0.0):
    z = z_scores(samples, truth, truth_se)
    cosine = torch.nn.functional.cosine_similarity(samples.mean(0), truth, 0)
    return float(z.abs().max()), float(cosine)


@pytest.mark.parametrize("h", [1, 2, 3])
@pytest.mark.parametrize("j", ["uniform", (2, 3), "grad_norm"])
def test_rlr_latent_lr_is_unbiased_on_linear_gaussian_chain(linear, h, j):
    backbone, reward, truth = linear
    max_z, cosine = _check(draws(RLR(h=h, j=j), backbone, reward, 800, 16, seed=h), truth)
    assert max_z < UNBIASED_Z
    assert cosine > 0.99  # and the test has power: the mean is close to the truth


def test_per_element_stds_are_stored_and_stay_unbiased():
    """A transition may return a std per latent element (here per dimension): rollout keeps
    the tensor instead of calling float() on it, and RLR and LR remain unbiased."""
    from rlr_video.chain import rollout

    stds = [[0.3, 0.2, 0.4], [0.5, 0.3, 0.6], [0.6, 0.7, 0.4], [0.7, 0.5, 0.9], [0.8, 0.6, 0.7]]
    backbone = LinearGaussianBackbone(stds)
    traj = rollout(backbone, None, torch.Generator().manual_seed(0), 4)
    assert torch.equal(traj.stds[3], torch.tensor(stds[2]))
    objective = backbone.exact_objective(TARGET)
    truth = torch.cat([g.flatten() for g in torch.autograd.grad(objective, backbone.trainable_parameters())])
    for estimator in (RLR(h=2), LR()):
        max_z, cosine = _check(draws(estimator, backbone, QuadraticReward(TARGET), 800, 16, seed=5), truth.double())
        assert max_z < UNBIASED_Z and cosine > 0.98, type(estimator).__name__


@pytest.mark.parametrize(
    "estimator",
    [RLR(h=2, zo_samples=1), RLR(h=1, baseline="running"), RLR(h=2, fo_steps=2), RLR(h=0), LR(), FullBP()],
    ids=["rlr-zo-sampled", "rlr-running-baseline", "rlr-fo-steps", "rlr-no-ho", "lr", "full-bp"],
)
def test_other_unbiased_estimators_on_linear_gaussian_chain(linear, estimator):
    backbone, reward, truth = linear
    max_z, cosine = _check(draws(estimator, backbone, reward, 800, 16, seed=11), truth)
    assert max_z < UNBIASED_Z and cosine > 0.98


def test_param_es_agrees_within_its_smoothing_bias(linear):
    # The smoothing bias is O(es_sigma^2) relative: ~0.25% here, far inside the standard error.
    backbone, reward, truth = linear
    max_z, cosine = _check(draws(RLR(h=2, zo="param_es", es_sigma=0.05), backbone, reward, 1200, 16, 3), truth)
    assert max_z < UNBIASED_Z and cosine > 0.8


@pytest.mark.parametrize(
    "estimator",
    [TruncatedBP(K=1), TruncatedBP(K=2, randomized=True), RLR(h=2, zo="none"), RLR(h=0, zo="none")],
    ids=["trunc-k1", "trunc-k2-randomized", "rlr-h2-no-zo", "rlr-h0-no-zo"],
)
def test_biased_estimators_are_detected(linear, estimator):
    backbone, reward, truth = linear
    max_z, _ = _check(draws(estimator, backbone, reward, 400, 16, seed=5), truth)
    assert max_z > BIASED_Z


@pytest.fixture(scope="module")
def neural():
    """The toy video backbone with 10 trainable numbers; the truth is FullBP's long-run mean."""
    torch.manual_seed(0)
    backbone = ToyBackbone.create(num_steps=4, trainable=("conv_out.bias", "time.bias"), guidance_scale=1.0)
    reward = DistanceReward()
    full = draws(FullBP(), backbone, reward, 1200, 16, seed=100)
    return backbone, reward, full.mean(0), full.std(0) / len(full) ** 0.5


@pytest.mark.parametrize(
    "estimator",
    [RLR(h=1), RLR(h=2), RLR(h=3, j="grad_norm"), RLR(h=2, zo="param_es", es_sigma=0.05), RLR(h=1, fo_steps=2)],
    ids=["rlr-h1", "rlr-h2", "rlr-h3-gradnorm", "rlr-param-es", "rlr-fo-steps"],
)
def test_unbiased_on_neural_backbone(neural, estimator):
    backbone, reward, truth, truth_se = neural
    max_z, _ = _check(draws(estimator, backbone, reward, 400, 16, seed=1), truth, truth_se)
    assert max_z < UNBIASED_Z


def test_truncated_backprop_is_biased_on_neural_backbone(neural):
    backbone, reward, truth, truth_se = neural
    max_z, _ = _check(draws(TruncatedBP(K=1), backbone, reward, 400, 16, seed=1), truth, truth_se)
    assert max_z > BIASED_Z


def test_lr_misses_the_deterministic_last_step(neural):
    """The toy's last DDIM step has no noise, so DDPO's REINFORCE has no term for it: biased,
    where RLR covers that step with its first-order term (same draws, same threshold)."""
    backbone, reward, truth, truth_se = neural
    assert backbone.transition.noise_std(1) == 0.0
    max_z, _ = _check(draws(LR(), backbone, reward, 400, 16, seed=1), truth, truth_se)
    assert max_z > UNBIASED_Z


def test_group_baseline_is_unbiased_with_groups_of_prompts(linear):
    """GRPO-style groups: 4 prompts x 4 videos, each advantage against the other videos of its
    own prompt (``baseline="group"``)."""
    backbone, reward, truth = linear
    prompts = [p for p in ("a red circle", "a blue square", "a green triangle", "a cyan circle") for _ in range(4)]
    grouped = (
        RLR(h=2, baseline="group"),
        LR(baseline="group"),
        RLR(h=2, baseline="group", state_baseline=True),
        LR(baseline="group", state_baseline=True),
    )
    for estimator in grouped:
        max_z, cosine = _check(draws(estimator, backbone, reward, 800, 16, seed=3, prompts=prompts), truth)
        assert max_z < UNBIASED_Z and cosine > 0.98, type(estimator).__name__


@pytest.mark.parametrize(
    "estimator",
    [RLR(h=2, state_baseline=True), RLR(h=1, zo_samples=1, state_baseline=True), LR(state_baseline=True)],
    ids=["rlr", "rlr-zo-sampled", "lr"],
)
def test_state_baseline_is_unbiased_on_linear_gaussian_chain(linear, estimator):
    """b_t = R(x0_hat(x_t)) depends on x_t, never on the noise each ratio scores: no bias."""
    backbone, reward, truth = linear
    max_z, cosine = _check(draws(estimator, backbone, reward, 800, 16, seed=13), truth)
    assert max_z < UNBIASED_Z and cosine > 0.98


def test_state_baseline_is_unbiased_on_neural_backbone(neural):
    """On the toy DDIM backbone x0_hat is the model's real clean estimate. (Not LR: it misses
    this chain's deterministic last step, see below.)"""
    backbone, reward, truth, truth_se = neural
    max_z, _ = _check(draws(RLR(h=2, state_baseline=True), backbone, reward, 400, 16, seed=1), truth, truth_se)
    assert max_z < UNBIASED_Z


def test_state_baseline_lowers_the_variance_of_likelihood_ratios():
    """On a 10-step toy chain (every parameter trained, four prompts in the batch, as in
    tools/bench_estimators.py) the reward of x0_hat(x_t) explains what the batch mean cannot:
    each prompt's own level, and most of R in the low-noise steps. LR's and RLR's per-draw
    variance fall severalfold (the benchmark measures ~8x and ~5x in relative MSE)."""
    backbone = ToyBackbone.create(num_steps=10, seed=0)
    reward = DistanceReward()
    prompts = ["a red circle moving left", "a blue square moving up", "a green triangle", "a white star"] * 2
    for make in (lambda sb: LR(state_baseline=sb), lambda sb: RLR(h=2, fo_steps=5, state_baseline=sb)):
        plain, with_cv = (draws(make(sb), backbone, reward, 60, 8, seed=2, prompts=prompts) for sb in (False, True))
        plain, with_cv = float(plain.var(0).sum()), float(with_cv.var(0).sum())
        assert with_cv < 0.4 * plain, type(make(False)).__name__
