"""The word-swap probe: samplers that do (and do not) listen to a word, built from the renderer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlr_video.testbed import shapes
from rlr_video.testbed import tiny_model as tm
from rlr_video.testbed.scorer import parse_prompt
from rlr_video.testbed.word_swap import swapped_prompts, word_swap

DEAF_VALUE = {"colour": "red", "shape": "circle", "direction": "left"}
PROMPTS = ["a red circle moving left on a black background", "a blue square standing still"]


def render_sampler(deaf_to: str | None = None):
    """Render each prompt exactly, except ``deaf_to``, which is fixed whatever the prompt says."""

    def sample_fn(prompts: list[str], seed: int) -> torch.Tensor:
        videos = []
        for prompt in prompts:
            parsed = parse_prompt(prompt)
            combo = {"colour": parsed.colour, "shape": parsed.shape, "direction": parsed.direction}
            if deaf_to is not None:
                combo[deaf_to] = DEAF_VALUE[deaf_to]
            spec = shapes.sample_spec(np.random.default_rng(seed), combo=tuple(combo.values()))
            videos.append(shapes.render(spec))
        return torch.stack(videos)

    return sample_fn


def test_swapped_prompts_change_one_word_and_keep_the_rest() -> None:
    variants = swapped_prompts(PROMPTS[0], "direction")
    assert [parse_prompt(v).direction for v in variants] == list(shapes.DIRECTIONS)
    assert variants[-1] == "a red circle standing still on a black background"
    assert {(parse_prompt(v).colour, parse_prompt(v).shape) for v in variants} == {("red", "circle")}
    assert [parse_prompt(v).colour for v in swapped_prompts(PROMPTS[1], "colour")] == list(shapes.COLOURS)
    with pytest.raises(ValueError, match="'size'"):
        swapped_prompts(PROMPTS[0], "size")


def test_a_model_that_draws_every_word_follows_and_responds() -> None:
    report = word_swap(render_sampler(), PROMPTS, seeds=[0, 1])
    for attribute, row in report.items():
        assert row["follows"] == 1.0, attribute
        assert row["responds"] == 1.0, attribute
        assert row["groups"] == 4


def test_a_model_deaf_to_direction_is_caught() -> None:
    report = word_swap(render_sampler(deaf_to="direction"), PROMPTS, seeds=[0, 1])
    assert report["direction"]["responds"] == 0.0
    # a share of hits k / n, rounded once like 1 / 5: the same double
    assert report["direction"]["follows"] == 1 / len(shapes.DIRECTIONS)
    assert report["colour"]["follows"] == report["shape"]["follows"] == 1.0


def test_same_noise_sampling_differs_only_by_prompt() -> None:
    pipe = tm.load_pipeline()
    prompts = [PROMPTS[0], PROMPTS[0], "a green triangle moving up on a black background"]
    videos = tm.sample(pipe, prompts, num_inference_steps=2, seed=3, same_noise=True)
    assert torch.equal(videos[0], videos[1])
    assert (videos[0] - videos[2]).abs().max() > 0.1
    independent = tm.sample(pipe, prompts[:2], num_inference_steps=2, seed=3)
    assert not torch.equal(independent[0], independent[1])
