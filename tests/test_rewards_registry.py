"""The reward registry, dict specs, composites and summary statistics (no models needed)."""

from __future__ import annotations

import math

import pytest
import torch
from reward_fixtures import smooth_videos
from tolerances import EPS64, assert_max_abs, sum_atol

from rewards import (
    CompositeReward,
    FunctionReward,
    Reward,
    as_reward,
    available_rewards,
    build_reward,
    register_reward,
)
from rewards import registry as registry_module
from rewards.stats import summarize, t_quantile_975


@pytest.fixture(autouse=True)
def clean_registry():
    """Tests register toy rewards; put the registry back as it was afterwards."""
    saved = dict(registry_module._REGISTRY)
    yield
    registry_module._REGISTRY.clear()
    registry_module._REGISTRY.update(saved)


def mean_brightness(frames, prompts, offset: float = 0.0):
    return frames.mean(dim=(1, 2, 3, 4)) + offset


def test_builtins_are_registered() -> None:
    assert {"aesthetic", "clip", "temporal", "flicker", "hpsv2", "pickscore"} <= set(available_rewards())


def test_function_reward_with_options() -> None:
    register_reward("luma", mean_brightness, needs_prompts=False)
    reward = build_reward("luma", offset=1.0)
    assert isinstance(reward, FunctionReward) and isinstance(reward, Reward)
    assert reward.name == "luma" and reward.differentiable and not reward.needs_prompts
    frames = smooth_videos(batch=3)
    assert torch.equal(reward(frames, [""] * 3), frames.mean(dim=(1, 2, 3, 4)) + 1.0)  # the function itself


def test_decorated_class_gets_missing_attributes() -> None:
    @register_reward("contrast", differentiable=False)
    class Contrast:
        def __init__(self, scale: float = 1.0):
            self.scale = scale

        def __call__(self, frames, prompts):
            return self.scale * frames.std(dim=(1, 2, 3, 4))

    reward = build_reward("contrast", scale=2.0)
    assert isinstance(reward, Contrast)
    assert (reward.name, reward.differentiable, reward.needs_prompts) == ("contrast", False, True)


def test_factory_registration() -> None:
    register_reward("half_flicker", factory=lambda: build_reward({"flicker": 0.5}))
    frames = smooth_videos()
    # 0 + 0.5 x flicker: a power of two and a zero, exact
    assert torch.equal(build_reward("half_flicker")(frames, ["", ""]), 0.5 * build_reward("flicker")(frames, ["", ""]))


def test_registration_errors() -> None:
    register_reward("luma", mean_brightness)
    with pytest.raises(ValueError, match="already registered"):
        register_reward("luma", mean_brightness)
    register_reward("luma", mean_brightness, overwrite=True)
    with pytest.raises(TypeError, match="non-empty string"):
        register_reward("", mean_brightness)


def test_unknown_reward_and_option_errors_name_them() -> None:
    with pytest.raises(KeyError, match="'aestetic'.*Did you mean 'aesthetic'"):
        build_reward("aestetic")
    with pytest.raises(TypeError, match="reward 'flicker' has no option 'chunk'.*did you mean 'chunk_size'"):
        build_reward("flicker", chunk=2)
    register_reward("luma", mean_brightness)
    with pytest.raises(TypeError, match="no option 'ofset'"):
        build_reward("luma", ofset=1)


def test_dict_spec_is_a_weighted_sum() -> None:
    register_reward("luma", mean_brightness, needs_prompts=False)
    reward = build_reward({"flicker": 2.0, "luma": {"weight": -0.5, "offset": 1.0}})
    assert isinstance(reward, CompositeReward)
    assert reward.name == "2*flicker+-0.5*luma"
    assert reward.differentiable and not reward.needs_prompts
    frames = smooth_videos(batch=3, frames=5).requires_grad_(True)
    terms = reward.score_terms(frames, [""] * 3)
    assert set(terms) == {"flicker", "luma"}
    expected = 2.0 * build_reward("flicker")(frames, [""] * 3) - 0.5 * (frames.mean(dim=(1, 2, 3, 4)) + 1.0)
    total = reward(frames, [""] * 3)
    # two weighted terms added: one rounding of their sum (sum_atol)
    atol = sum_atol(2, float((2.0 * terms["flicker"].abs() + 0.5 * terms["luma"].abs()).max()))
    assert_max_abs(total, expected, atol, "the weighted sum")
    assert_max_abs(reward.combine(terms), expected, atol, "combine")
    total.sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0


def test_dict_spec_labels_and_unwrapping() -> None:
    register_reward("luma", mean_brightness)
    single = build_reward({"flicker": 1})
    assert not isinstance(single, CompositeReward) and single.name == "flicker"
    twice = build_reward({"dim": {"reward": "luma"}, "bright": {"reward": "luma", "offset": 1.0}})
    assert [r.name for _, r in twice.terms] == ["dim", "bright"]
    frames = smooth_videos()
    terms = twice.score_terms(frames, ["", ""])
    # (m + 1) - (m + 0) with m in [0, 1]: m + 1 rounds by at most eps (sum_atol), the rest is exact
    assert_max_abs(terms["bright"] - terms["dim"], torch.ones(2), sum_atol(2, 2.0), "an offset of 1")


@pytest.mark.parametrize(
    ("spec", "options", "error", "match"),
    [
        ({"flicker": "heavy"}, {}, TypeError, "entry 'flicker'.*'heavy'"),
        ({"flicker": True}, {}, TypeError, "entry 'flicker'"),
        ({"flicker": {"weight": "x"}}, {}, TypeError, "weight must be a number"),
        ({}, {}, ValueError, "empty reward spec"),
        ({"flicker": 1.0}, {"chunk_size": 2}, TypeError, "go inside it"),
        (3.0, {}, TypeError, "cannot build a reward"),
    ],
)
def test_bad_specs(spec, options, error, match) -> None:
    with pytest.raises(error, match=match):
        build_reward(spec, **options)


def test_a_reward_object_passes_through() -> None:
    reward = build_reward("flicker")
    assert build_reward(reward) is reward


def test_t_quantiles() -> None:
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042  # the table itself
    # the expansion (good to ~1e-6 here) against published quantiles, to one unit of their last
    # printed decimal; it joins the table smoothly at 31
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-4)
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=1e-4)
    assert t_quantile_975(10**6) == pytest.approx(1.95996, abs=1e-5)


def test_summarize() -> None:
    s = summarize([1.0, 2.0, 3.0])
    assert (s["n"], s["mean"], s["std"]) == (3, 2.0, 1.0)
    half = 4.303 / math.sqrt(3)
    # t * std * sqrt(sum w^2) / sum w against t / sqrt(3): four float64 roundings of the half-width
    assert s["ci95"] == pytest.approx([2.0 - half, 2.0 + half], abs=4 * EPS64 * half)
    assert summarize([1.0, 2.0, 3.0], weights=[2.0, 2.0, 2.0]) == s  # equal weights: the plain interval
    assert summarize([5.0]) == {"n": 1, "mean": 5.0, "std": None, "ci95": None}
    assert summarize([])["mean"] is None


def test_a_plain_callable_gets_the_reward_attributes() -> None:
    def sharpness(frames, prompts):
        return frames.mean(dim=(1, 2, 3, 4))

    reward = build_reward(sharpness)
    assert (reward.name, reward.differentiable, reward.needs_prompts) == ("sharpness", True, True)
    frames = torch.rand(2, 3, 3, 8, 8)
    assert torch.equal(reward(frames, ["a", "b"]), sharpness(frames, ["a", "b"]))
    built = build_reward("brightness")
    assert as_reward(built) is built  # a Reward passes through unchanged
