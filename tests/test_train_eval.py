"""``train.eval``, the guard against reward hacking: held-out prompts and rewards scored on fixed
seeds during training, logged beside the training reward, plotted, summarised, and the testbed's
ground truth as a reward (``truth``)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image
from tolerances import EPS64, sum_atol

from rewards import build_reward, registry
from rlr_video.chain.sample import eval_set, sample_videos
from rlr_video.config import ConfigError, load_config
from rlr_video.config.loading import PRESET_DIR
from rlr_video.testbed import shapes
from rlr_video.train.evaluation import HeldOutEvaluation
from rlr_video.train.metrics import CURVE_FILE, read_metrics
from rlr_video.train.summary import hacking_warnings, run_summary
from rlr_video.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

HELD_OUT = ["a red circle moving left", "a blue square moving up", "a green triangle moving down"]
EVAL = f"train.eval={{reward: redness, items: {json.dumps(HELD_OUT)}, every: 2, videos: 5, batch_size: 2}}"


def toy(out, *overrides: str):
    return load_config(
        "toy", [f"train.output_dir={out}", "train.progress=false", "train.steps=4", "train.batch_size=2", *overrides]
    )


@pytest.fixture
def global_rng_rewards():
    """``noisy_brightness``: brightness plus noise from numpy's and Python's global generators, so
    training depends on their state; ``rng_eater``: a held-out reward that draws from all three
    global generators (as a reward subsampling frames, or a dropout layer, would)."""
    saved = dict(registry._REGISTRY)

    @registry.register_reward("noisy_brightness", needs_prompts=False)
    def noisy_brightness(frames, prompts):
        noise = torch.tensor([np.random.rand() + random.random() for _ in range(len(frames))])
        return frames.mean(dim=(1, 2, 3, 4)) + 0.05 * noise.to(frames)

    @registry.register_reward("rng_eater", needs_prompts=False)
    def rng_eater(frames, prompts):
        np.random.rand(7), random.random(), torch.rand(3)
        return frames.mean(dim=(1, 2, 3, 4))

    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


# ------------------------------------------------------------------ config


def test_the_eval_section_is_checked_before_anything_loads(tmp_path):
    good = toy(tmp_path, EVAL)
    assert good.train.eval.reward == "redness" and good.train.eval.items == HELD_OUT
    assert toy(tmp_path).train.eval is None  # off unless asked for
    bad = {
        "train.eval={items: [a red circle]}": "train.eval.reward",
        "train.eval={reward: redness}": "exactly one of train.eval.path or train.eval.items",
        "train.eval={reward: rednes, items: [x]}": "did you mean 'redness'",
        "train.eval={reward: {total: {reward: redness}}, items: [x]}": "labels other than total, training_reward",
        "train.eval={reward: {truth: {attribute: [colour]}}, items: [x]}": "no option 'attribute'",
        "train.eval={reward: redness, path: nowhere.txt}": "train.eval.path",
        "train.eval={reward: redness, items: [x], every: 0}": "train.eval.every",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            toy(tmp_path, override)


def test_a_relative_eval_path_in_a_yaml_file_is_next_to_it(tmp_path, monkeypatch):
    (tmp_path / "held.txt").write_text("a red circle moving left\n")
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: {toy: {}}\nprompts: {items: [a red circle]}\ntrain: {eval: {reward: redness, path: held.txt}}\n"
    )
    monkeypatch.chdir(PRESET_DIR)  # not the file's folder
    assert load_config(config).train.eval.path == str((tmp_path / "held.txt").resolve())


@pytest.mark.parametrize(
    "preset", ["tiny-shapes", "tiny-shapes-direction", "tiny-shapes-wan", "tiny-shapes-wan-direction"]
)
def test_the_testbed_presets_guard_with_the_ground_truth(preset):
    config = load_config(preset)
    e = config.train.eval
    assert e.path == str(PRESET_DIR / "prompts" / "shapes-heldout.txt") and e.videos == 15
    guard = HeldOutEvaluation(e, build_reward("brightness"))
    assert len(guard.prompts) == 15 and len(set(guard.prompts)) == 15  # one video per held-out prompt
    assert (guard.prompts, guard.seeds) == eval_set(guard.prompts, 15, 1234)  # the testbed's own set
    names = [guard.reward.name] if isinstance(e.reward, str) else [r.name for _, r in guard.reward.terms]
    assert names == (["kept", "down"] if preset.endswith("-direction") else ["truth"])


# ------------------------------------------------------------------ the ground truth as a reward


def test_truth_is_the_scorers_share_of_attributes_right():
    batch = shapes.make_batch(6, seed=3)
    videos, captions = batch.videos[:6], batch.captions[:6]
    assert torch.equal(build_reward("truth")(videos, captions), torch.ones(6))
    wrong = [shapes.combo_prompt(s.colour, s.shape, "still" if s.direction != "still" else "left") for s in batch.specs]
    truth = build_reward("truth")(videos, wrong[:6])
    # colour and shape right, direction wrong: numpy's float64 mean of 1, 1, 0 is Python's 2 / 3
    assert torch.equal(truth, torch.full((6,), 2 / 3))
    assert torch.equal(build_reward("truth", attributes=["colour", "shape"])(videos, wrong[:6]), torch.ones(6))
    assert torch.equal(build_reward("truth", attributes=["all"])(videos, wrong[:6]), torch.zeros(6))
    # target: judged against the prompt rewritten with those words (a retargeted training reward)
    retargeted = build_reward("truth", attributes=["direction"], target={"direction": "still"})
    still = torch.tensor([float(s.direction == "still") for s in batch.specs[:6]])
    assert torch.equal(retargeted(videos, captions), still) and 0 < still.sum() < 6
    reward = build_reward("truth")
    assert not reward.differentiable and reward.frame_sampling == "all"
    with pytest.raises(ValueError, match="attributes must be"):
        build_reward("truth", attributes=["size"])
    with pytest.raises(ValueError, match="target direction='sideways'"):
        build_reward("truth", target={"direction": "sideways"})


# ------------------------------------------------------------------ in training


def test_held_out_scores_are_logged_beside_the_training_reward(tmp_path, capsys):
    out = tmp_path / "run"
    config = toy(out, EVAL, "reward={color_match: 1.0, brightness: 0.5}", "train.steps=3")
    trainer = Trainer(config)
    records = trainer.train()
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    held = ["eval/redness", "eval/training_reward"]
    assert set(held) <= set(rows[0]) and "reward_mean" not in rows[0]  # step 0: the base model, before training
    assert [all(k in r for k in held) for r in rows] == [True, False, True, True]  # every 2 steps and the last
    assert [r["step"] for r in records] == [1, 2, 3] and "eval/redness" in records[-1]

    # The logged numbers are the held-out videos' mean scores: sample them again from the final weights.
    guard = trainer.heldout
    prompts, seeds = eval_set(HELD_OUT, 5, config.train.eval.seed)
    assert (guard.prompts, guard.seeds) == (prompts, seeds)
    values = {"redness": [], "training": []}
    for batch in guard.batches():  # the evaluation's own batches: the same float sums
        videos = sample_videos(trainer.model, [prompts[i] for i in batch], [seeds[i] for i in batch])
        values["redness"] += build_reward("redness")(videos, [prompts[i] for i in batch]).tolist()
        values["training"] += trainer.heldout.training_reward(videos, [prompts[i] for i in batch]).tolist()
    # the evaluation's math.fsum mean against numpy's running sum of the same 5 float64 values:
    # a few roundings at their size (sum_atol at float64 eps)
    for column, key in (("redness", "eval/redness"), ("training", "eval/training_reward")):
        atol = sum_atol(len(values[column]) + 1, max(map(abs, values[column])), EPS64)
        assert rows[-1][key] == pytest.approx(np.mean(values[column]), abs=atol), key
    again, once_more = trainer.evaluate(), trainer.evaluate()
    assert again.pop("eval_time") > 0 and again == {k: v for k, v in once_more.items() if k != "eval_time"}

    summary = capsys.readouterr().out
    first, last = rows[0]["eval/redness"], rows[-1]["eval/redness"]
    assert f"redness          step 0 {first:.4f} -> step 3 {last:.4f}" in summary
    assert "training reward  step 0" in summary
    with Image.open(out / CURVE_FILE) as image:
        assert image.size == (600, 700)  # two panels: the training reward, and the held-out rewards below


def test_evaluation_changes_nothing_in_training(tmp_path, global_rng_rewards):
    """A run with the guard trains exactly as one without: every global random state is restored
    after an evaluation, even when a held-out reward draws from all of them."""
    common = ["reward=noisy_brightness", "train.steps=3"]
    plain = Trainer(toy(tmp_path / "plain", *common))
    guarded = Trainer(toy(tmp_path / "guarded", *common, EVAL.replace("redness", "rng_eater").replace("2,", "1,")))
    runs = []
    for trainer in (plain, guarded):
        np.random.seed(0), random.seed(0)  # the trainer leaves these global generators to the user
        runs.append(trainer.train())
    plain_rows, guarded_rows = runs
    assert all("eval/rng_eater" in r for r in guarded_rows)  # evaluated after every step
    volatile = ("step_time", "peak_mem_mb", "eval_time")
    for a, b in zip(plain_rows, guarded_rows, strict=True):
        assert {k: v for k, v in a.items() if k not in volatile} == {
            k: v for k, v in b.items() if k not in volatile and not k.startswith("eval/")
        }
    for p, q in zip(plain.params, guarded.params, strict=True):
        assert torch.equal(p, q)


def test_a_composite_held_out_reward_logs_each_term_and_its_total(tmp_path):
    out = tmp_path / "run"
    spec = "{reward: {redness: 1.0, bright: {reward: brightness, weight: 0.5}}"
    trainer = Trainer(toy(out, f"train.eval={spec}, items: [a red circle], videos: 2}}", "train.steps=1"))
    trainer.train()
    row = read_metrics(out / "metrics.jsonl")[-1]
    # each video's total is a float32 sum of redness (|r| <= 1) and 0.5 brightness (<= 0.5): one
    # rounding at 1.5 (sum_atol); the means are float64, good to 1e-16
    assert row["eval/total"] == pytest.approx(row["eval/redness"] + 0.5 * row["eval/bright"], abs=sum_atol(2, 1.5))


# ------------------------------------------------------------------ the summary's warning


def write_run(folder, train: list[float], held: dict[int, float]) -> None:
    """A metrics.jsonl as the trainer writes it: step 0 held-out only, then one row per step."""
    rows = [{"step": 0, "eval/truth": held[0], "eval/training_reward": 0.1}]
    for step, reward in enumerate(train, start=1):
        row = {"step": step, "reward_mean": reward, "step_time": 1.0}
        if step in held:
            row.update({"eval/truth": held[step], "eval/training_reward": 0.2})
        rows.append(row)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_summary_warns_when_the_training_reward_rose_while_a_held_out_one_fell(tmp_path):
    rising = [0.1] * 10 + [0.5] * 10  # first tenth (2 steps) 0.1, last tenth 0.5
    write_run(tmp_path, rising, {0: 0.9, 10: 0.7, 20: 0.6})
    [warning] = hacking_warnings(read_metrics(tmp_path / "metrics.jsonl"))
    assert (
        "possible reward hacking: the training reward rose (batch mean of the first 2 steps 0.1000, of the last 2 "
        "0.5000) while held-out truth fell (step 0 0.9000, step 20 0.6000, on the same held-out videos)"
    ) in warning
    assert warning in run_summary(tmp_path)
    assert "held-out evaluation" in run_summary(tmp_path) and "s/step" in run_summary(tmp_path)
    assert run_summary(tmp_path).startswith("training done: 20 steps, 1.00 s/step")  # step 0's row has no time
    write_run(tmp_path, rising, {0: 0.6, 10: 0.2, 20: 0.7})  # fell, then recovered: first vs last
    assert hacking_warnings(read_metrics(tmp_path / "metrics.jsonl")) == []
    write_run(tmp_path, rising[::-1], {0: 0.9, 20: 0.6})  # both fell: not hacking
    assert hacking_warnings(read_metrics(tmp_path / "metrics.jsonl")) == []
