"""What `make demo`'s fine-tune changed: the same evaluation set before and after.

Loads the run's config, samples a fixed set of (prompt, seed) pairs with the base model and
again with the run's last checkpoint, and prints the reward (mean ± standard error, and the
paired gain) and the ground-truth prompt-following of both, next to the training reward of
the first and last steps. Writes ``<run>/demo_report.json``.

    python tools/demo_report.py runs/demo [--videos 45]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from rewards import build_reward
from rlr_video.config import load_config
from rlr_video.prompts import config_prompts
from rlr_video.testbed.evaluate import GROUND_TRUTH_KEYS, eval_set, evaluate
from rlr_video.train.checkpoint import latest_checkpoint, weights_dir
from rlr_video.train.metrics import read_metrics
from rlr_video.train.model import build_backbone, load_weights


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} (sd, {len(values)} steps)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a training output folder")
    parser.add_argument("--videos", type=int, default=45, help="evaluation videos (prompts cycled)")
    args = parser.parse_args()

    if not (args.run / "config.yaml").is_file():
        raise SystemExit(f"{args.run}: not a training output folder (no config.yaml; run `make demo` first)")
    config = load_config(args.run / "config.yaml")
    checkpoint = latest_checkpoint(args.run)
    if checkpoint is None:
        raise SystemExit(f"{args.run}: no checkpoint to evaluate (did training finish?)")
    prompts, seeds = eval_set(config_prompts(config.prompts), args.videos)
    reward = build_reward(config.reward)
    torch.manual_seed(config.train.seed)
    model = build_backbone(config.model)
    before = evaluate(model, reward, prompts, seeds)
    load_weights(model, weights_dir(checkpoint))
    after = evaluate(model, reward, prompts, seeds)

    gains = np.subtract(after["rewards"], before["rewards"])
    gain_se = float(gains.std(ddof=1) / math.sqrt(len(gains)))
    rows = read_metrics(args.run / "metrics.jsonl")
    train = [r["reward_mean"] for r in rows if r.get("reward_mean") is not None]
    window = max(2, len(train) // 6)
    print(f"\ntraining reward (batch means), first {window} steps: {mean_sd(train[:window])}")
    print(f"training reward (batch means), last {window} steps:  {mean_sd(train[-window:])}")
    print(f"\nevaluation: {len(prompts)} videos, fixed prompts and seeds, base vs {checkpoint.name}")
    print(
        f"  reward  before {before['reward']:.4f} ± {before['reward_se']:.4f}   "
        f"after {after['reward']:.4f} ± {after['reward_se']:.4f}   (mean ± standard error)"
    )
    print(f"  paired gain {gains.mean():+.4f} ± {gain_se:.4f}  (z = {gains.mean() / gain_se:.1f})")
    for key in GROUND_TRUTH_KEYS:
        print(f"  ground truth {key:<10} {before[key]:.3f} -> {after[key]:.3f}")
    report = {
        "checkpoint": str(checkpoint),
        "videos": len(prompts),
        "before": before,
        "after": after,
        "paired_gain": float(gains.mean()),
        "paired_gain_se": gain_se,
        "train_reward_first": train[:window],
        "train_reward_last": train[-window:],
    }
    (args.run / "demo_report.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
