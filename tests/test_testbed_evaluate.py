"""The testbed's fixed evaluation set, ``evaluate``, and the tools built on them
(``tools/bench_training.py``, ``tools/demo_report.py``) run end to end on small settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from backbone_fixtures import chain_rtol
from tolerances import EPS64, assert_rel_close, sum_atol

from rewards import build_reward
from rlr_video.backbones import load_backbone
from rlr_video.chain import sample_videos
from rlr_video.config import load_config
from rlr_video.seeds import derive_seed
from rlr_video.testbed.evaluate import GROUND_TRUTH_KEYS, eval_set, evaluate
from rlr_video.testbed.scorer import score_batch
from rlr_video.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a red circle moving left on a black background", "a blue square moving up on a white background"]

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py


def test_eval_set_cycles_prompts_with_seeds_of_its_own():
    prompts, seeds = eval_set(PROMPTS, 5)
    assert prompts == [PROMPTS[i % 2] for i in range(5)]
    assert (prompts, seeds) == eval_set(PROMPTS, 5) and len(set(seeds)) == 5
    training = {derive_seed(0, "micro", g) for g in range(100)}  # the trainer's stream
    assert not training & set(seeds)
    with pytest.raises(ValueError, match="no prompts"):
        eval_set([], 3)


def test_evaluate_scores_the_sampled_videos_with_the_reward_and_the_ground_truth():
    backbone = load_backbone("tiny-shapes", num_steps=3, guidance_scale=2.0)
    reward = build_reward("brightness")
    prompts, seeds = eval_set(PROMPTS, 3)
    result = evaluate(backbone, reward, prompts, seeds, batch_size=2)  # two batches
    again = evaluate(backbone, reward, prompts, seeds)  # one batch: a fixed set, repeatable
    videos = sample_videos(backbone, prompts, seeds)
    # one batch of three both ways: the same sampling and scoring, bitwise
    assert torch.equal(torch.tensor(again["rewards"]), reward(videos, prompts))
    # batches of 2 and 1 against one of 3: the chain may sum in another order (chain_rtol, 6e-3;
    # measured 1e-8); videos of other seeds would be 2e-2 away
    rtol = chain_rtol(backbone)
    assert_rel_close(torch.tensor(result["rewards"]), torch.tensor(again["rewards"]), rtol, "rewards in two batches")
    rewards = torch.tensor(result["rewards"], dtype=torch.float64)
    # numpy's float64 mean and std against torch's: sums of 3 terms (sum_atol at float64 eps);
    # the std's rounding is at the rewards' size, max|r| / std times more relative to it
    assert result["reward"] == pytest.approx(float(rewards.mean()), abs=sum_atol(4, float(rewards.abs().max()), EPS64))
    std = float(rewards.std())
    conditioned = sum_atol(6, float(rewards.abs().max()) / std, EPS64)
    assert result["reward_se"] == pytest.approx(std / 3**0.5, rel=conditioned)
    truth = score_batch(videos, prompts)
    for key in GROUND_TRUTH_KEYS:  # means of three 0/1 scores: float32 against float64
        assert result[key] == pytest.approx(float(truth[key].mean()), abs=sum_atol(4, 1.0))


def _run_tool(*argv: str) -> str:
    # one torch thread, as in-process tests have: two spin-waiting OpenMP threads slow a child
    # process on a busy 2-core machine (this bench: 28 s with one, 49-68 s with two at load 12)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_training_runs_every_method_and_seed(tmp_path):
    out, png = tmp_path / "training.json", tmp_path / "training.png"
    printed = _run_tool(
        "tools/bench_training.py",
        "--config",
        "toy",
        "--estimators",
        "rlr",
        "full_bp",
        "--seeds",
        "0",
        "1",
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--eval-videos",
        "4",
        "--out",
        str(out),
        "--plot",
        str(png),
    )
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"rlr", "full_bp"} and "rlr" in printed and "full_bp" in printed
    assert "--estimators rlr full_bp" in result["command"] and f"--out {out}" in result["command"]  # all of it
    runs = [(r["method"], r["seed"]) for r in result["runs"]]
    assert runs == [("rlr", 0), ("rlr", 1), ("full_bp", 0), ("full_bp", 1)]
    for run in result["runs"]:
        assert [p["step"] for p in run["curve"]] == [0, 1, 2]
        assert [p["samples"] for p in run["curve"]] == [0, 4, 8]  # toy preset: batch 4
        assert run["curve"][0]["seconds"] == 0 < run["curve"][1]["seconds"] < run["curve"][2]["seconds"]
    # Same seed, same starting weights and evaluation set: every method starts from the same point.
    starts = {tuple(r["start_rewards"]) for r in result["runs"]}
    assert len(starts) == 1
    assert png.stat().st_size > 0


def test_demo_report_compares_base_and_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    config = load_config("toy", [f"train.output_dir={run}", "train.steps=3", "train.progress=false", "optim.lr=0.05"])
    Trainer(config).train()
    printed = _run_tool("tools/demo_report.py", str(run), "--videos", "6")
    report = json.loads((run / "demo_report.json").read_text())
    assert report["checkpoint"].endswith("step-000003") and report["videos"] == 6
    after, before = (torch.tensor(report[k]["rewards"], dtype=torch.float64) for k in ("after", "before"))
    gain = after - before  # the report's float64 differences exactly; its mean numpy's: 6 terms
    assert report["paired_gain"] == pytest.approx(gain.mean().item(), abs=sum_atol(7, float(gain.abs().max()), EPS64))
    assert gain.abs().max() > 0  # the checkpoint's weights were loaded
    assert "paired gain" in printed and "ground truth direction" in printed
