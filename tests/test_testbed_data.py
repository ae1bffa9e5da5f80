"""The moving-shapes data, the analytic ground-truth scorer and the trimmed tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import EPS64, sum_atol

from rlr_video.testbed import scorer, shapes


@pytest.fixture(scope="module")
def batch16() -> shapes.Batch:
    return shapes.make_batch(90, seed=1, split="all", resolution=16)


def test_render_shape_range_and_determinism() -> None:
    a = shapes.make_batch(4, seed=7)
    b = shapes.make_batch(4, seed=7)
    c = shapes.make_batch(4, seed=8)
    assert a.videos.shape == (4, 8, 3, 16, 16)
    assert a.videos.dtype == torch.float32
    assert float(a.videos.min()) >= 0.0 and float(a.videos.max()) <= 1.0
    assert torch.equal(a.videos, b.videos) and a.captions == b.captions
    assert not torch.equal(a.videos, c.videos)
    assert shapes.make_batch(2, seed=0, frames=4, resolution=32).videos.shape == (2, 4, 3, 32, 32)


def test_caption_format() -> None:
    spec = shapes.ShapeSpec("red", "circle", "left", "black", 0.35, 0.06, 0.7, 0.5)
    assert shapes.caption(spec) == "a red circle moving left on a black background"
    still = shapes.ShapeSpec("cyan", "square", "still", "noisy", 0.4, 0.0, 0.5, 0.5)
    assert shapes.caption(still) == "a cyan square standing still on a noisy background"
    detailed = "a big cyan square standing still on a noisy background"
    assert shapes.caption(still, detailed=True) == detailed
    with pytest.raises(ValueError, match="unknown colour 'mauve'"):
        shapes.ShapeSpec("mauve", "circle", "left", "black", 0.3, 0.06, 0.5, 0.5)


def test_heldout_split_is_disjoint_and_covers_every_value() -> None:
    held = shapes.HELDOUT_COMBOS
    assert len(held) == 15
    assert not held & set(shapes.TRAIN_COMBOS)
    assert len(held) + len(shapes.TRAIN_COMBOS) == len(shapes.all_combos())
    for i, values in enumerate((shapes.COLOURS, shapes.SHAPES, shapes.DIRECTIONS)):
        assert {c[i] for c in held} == set(values)
        assert {c[i] for c in shapes.TRAIN_COMBOS} == set(values)
    train = shapes.make_batch(200, seed=3, split="train")
    assert all(s.combo not in held for s in train.specs)
    test = shapes.make_batch(30, seed=3, split="heldout")
    assert all(s.combo in held for s in test.specs)
    assert len(shapes.heldout_prompts()) == 15


def test_shapes_stay_inside_the_frame() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        spec = shapes.sample_spec(rng, "all")
        for f in (0, 7):
            x, y = spec.centre(f)
            half = spec.size / 2
            assert half - 1e-9 <= x <= 1 - half + 1e-9 and half - 1e-9 <= y <= 1 - half + 1e-9


@pytest.mark.parametrize("resolution", [16, 32])
def test_scorer_is_right_on_ground_truth(resolution: int, batch16: shapes.Batch) -> None:
    b = batch16 if resolution == 16 else shapes.make_batch(45, 2, "all", resolution=resolution)
    acc = scorer.accuracy(b.videos, b.captions)
    assert acc["valid"] == 1.0
    assert acc["colour"] == 1.0 and acc["shape"] == 1.0 and acc["direction"] == 1.0
    assert acc["speed_ok"] == 1.0 and acc["size_ok"] >= 0.95
    assert acc["colour_share"] > 0.95


def test_scorer_measures_motion_speed_and_size() -> None:
    spec = shapes.ShapeSpec("green", "square", "right", "gray", 0.375, 0.0625, 0.25, 0.5)
    m = scorer.measure(shapes.render(spec, resolution=32))
    assert m.direction == "right" and m.colour == "green" and m.shape == "square"
    # A pixel-aligned square (12 px, from x = 8 px, 2 px a frame at 32 px): exact areas and
    # centroids; the line fit is float64 sums over its 144 pixels in 8 frames. Half a pixel of
    # error would be 0.016.
    atol = sum_atol(8 * 144, 1.0, EPS64)
    assert m.speed == pytest.approx(0.0625, abs=atol)
    assert m.displacement[0] == pytest.approx(0.0625 * 7, abs=atol)
    assert m.size == pytest.approx(0.375, abs=atol)


def test_scorer_rejects_wrong_prompts(batch16: shapes.Batch) -> None:
    def swap(value: str, options) -> str:
        options = list(options)
        return options[(options.index(value) + 1) % len(options)]

    for video, spec in list(zip(batch16.videos, batch16.specs, strict=True))[:30]:
        for attr, options in (
            ("colour", shapes.COLOURS),
            ("shape", shapes.SHAPES),
            ("direction", shapes.DIRECTIONS),
        ):
            wrong = dict(colour=spec.colour, shape=spec.shape, direction=spec.direction)
            wrong[attr] = swap(wrong[attr], options)
            prompt = f"a {wrong['colour']} {wrong['shape']} {shapes.motion_phrase(wrong['direction'])}"
            s = scorer.score_video(video, prompt)
            assert s[attr] == 0.0 and s["all"] == 0.0, (prompt, spec)


def test_scorer_flags_videos_without_a_shape() -> None:
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(8, 3, 16, 16, generator=gen)
    blank = torch.full((8, 3, 16, 16), 0.5)
    wash = torch.zeros(8, 3, 16, 16)
    wash[:, 0] = 1.0  # a red frame is not a red shape
    for video in (noise, blank, wash):
        s = scorer.score_video(video, "a red circle moving left")
        assert s["valid"] == 0.0 and s["colour"] == 0.0 and s["all"] == 0.0


def test_prompt_parsing() -> None:
    p = scorer.parse_prompt("A small red circle moving left quickly on a gray background.")
    assert p == scorer.ParsedPrompt("red", "circle", "left", "gray", "small", "quickly")
    assert scorer.parse_prompt("a blue square standing still").direction == "still"
    # no motion phrase: the direction is left open, and any direction counts as right
    assert scorer.parse_prompt("a big red circle on a white background") == scorer.ParsedPrompt(
        "red", "circle", None, "white", "big", None
    )
    video = shapes.render(shapes.ShapeSpec("red", "circle", "up", "black", 0.35, 0.06, 0.5, 0.7))
    assert scorer.score_video(video, "a red circle on a black background")["all"] == 1.0
    assert scorer.score_video(video, "a red circle moving down")["direction"] == 0.0
    for spec in shapes.make_batch(20, 4, detailed_captions=True).specs:
        text = shapes.caption(spec, detailed=True)
        assert scorer.parse_prompt(text).colour == spec.colour


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a mauve circle moving left", "unknown colour 'mauve'.*known: red, green"),
        ("a red blob moving left", "unknown shape 'blob'.*known: circle, square, triangle"),
        ("a red circle moving sideways", "unknown direction 'sideways'"),
        ("a red circle moving left fast", "unknown speed word 'fast'"),
        ("a red circle moving left on a plaid background", "unknown background 'plaid'"),
        ("a red circle standing still slowly", "a still shape has no speed"),
        ("red circles everywhere", "cannot parse prompt.*expected: a \\[small\\|big\\]"),
    ],
)
def test_prompt_parse_errors_are_clear(prompt: str, message: str) -> None:
    with pytest.raises(scorer.PromptParseError, match=message):
        scorer.parse_prompt(prompt)


def test_detailed_prompts_check_size_and_speed() -> None:
    b = shapes.make_batch(30, 5, detailed_captions=True)
    acc = scorer.accuracy(b.videos, b.captions)
    assert acc["speed_ok"] == 1.0 and acc["size_ok"] >= 0.9


def test_ground_truth_reward_callable(batch16: shapes.Batch) -> None:
    reward = scorer.GroundTruthReward()
    values = reward(batch16.videos[:6], batch16.captions[:6])
    assert values.shape == (6,) and torch.all(values == 1.0)
    wrong = ["a red circle moving left"] * 6
    assert float(reward(batch16.videos[:6], wrong).mean()) < 1.0
    assert not reward.differentiable


def test_trimmed_tokenizers_match_full_clip_bpe(tmp_path) -> None:
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    from rlr_video.testbed import tokenizer as tk

    words = shapes.vocabulary()
    vocab, merges = tk.write_clip_tokenizer_files(words, tmp_path)
    bpe = tk.write_open_clip_bpe(words, tmp_path / "bpe.txt.gz")
    full = SimpleTokenizer()
    trimmed = SimpleTokenizer(bpe_path=str(bpe))
    hf = CLIPTokenizer(str(vocab), str(merges), pad_token=tk.EOT)
    assert hf.vocab_size == trimmed.vocab_size < 1000
    for text in shapes.make_batch(10, 0, detailed_captions=True).captions + ["hello, world"]:
        pieces = [trimmed.decoder[i] for i in trimmed.encode(text)]
        if text != "hello, world":  # caption words split exactly as with the full vocab
            assert pieces == [full.decoder[i] for i in full.encode(text)]
        ids = hf(text)["input_ids"]
        assert ids[0] == hf.bos_token_id and ids[-1] == hf.eos_token_id
        assert ids[1:-1] == trimmed.encode(text)  # both libraries number tokens alike
