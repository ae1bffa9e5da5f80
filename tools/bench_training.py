"""Fine-tuning the testbed model with each estimator: reward and ground truth vs samples and time.

Every estimator trains the same config (by default the ``tiny-shapes`` preset: the shipped
text-to-video model and its reward; ``reward=...`` overrides it) from the same seeds. Every ``--eval-every``
steps the current weights sample a fixed evaluation set (the same prompts and seeds for every
run and every step) which is scored by the training reward and by the analytic ground truth,
so a reward that rises while the ground truth falls is reward hacking. Wall-clock counts
training steps only, not evaluations.

    python tools/bench_training.py [--seeds 0 1 2] [--steps 20] [--estimators rlr truncated_bp lr full_bp]
        [key=value ...]    # config overrides for every run, e.g. train.batch_size=4

writes ``benchmarks/training.json`` and ``benchmarks/training.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rewards import build_reward
from rlr_video.config import load_config
from rlr_video.testbed.evaluate import GROUND_TRUTH_KEYS, eval_set, evaluate
from rlr_video.train.trainer import Trainer

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# What each method changes in the config; everything else (lr, batch, steps) is shared.
ESTIMATORS = {
    "rlr": [],  # the preset's RLR settings
    "truncated_bp": ["estimator.name=truncated_bp", "estimator.K=1"],  # AlignProp / VADER
    "lr": ["estimator.name=lr"],  # DDPO (REINFORCE over every step, on-policy)
    "full_bp": ["estimator.name=full_bp"],  # backprop through the whole chain
}


class EvaluatingTrainer(Trainer):
    """A trainer that evaluates a fixed set of its prompts every ``every`` steps (and at step 0)."""

    def __init__(self, config, eval_videos: int, every: int, target: dict[str, str] | None = None):
        super().__init__(config)
        self.target = target  # ground truth against the prompts rewritten with these words
        self.eval_prompts, self.eval_seeds = eval_set(self.prompts, eval_videos)
        self.every = every
        self.eval_reward = build_reward(config.reward)
        self.train_seconds = 0.0
        self.curve = [self._evaluate(0)]

    def _evaluate(self, step: int) -> dict:
        result = evaluate(self.model, self.eval_reward, self.eval_prompts, self.eval_seeds, target=self.target)
        result.update(step=step, samples=self.position * self.config.train.batch_size, seconds=self.train_seconds)
        print(
            f"    step {step:3d}  reward {result['reward']:.4f} ± {result['reward_se']:.4f}  "
            + "  ".join(f"{k} {result[k]:.3f}" for k in GROUND_TRUTH_KEYS),
            flush=True,
        )
        return result

    def on_step_end(self, step: int, record: dict) -> None:
        self.train_seconds += record["step_time"]
        if step % self.every == 0 or step == self.config.train.steps:
            self.curve.append(self._evaluate(step))


def bench_config(config_name: str, overrides: list[str], seed: int, steps: int, out: Path):
    """One benchmark run's config: ``overrides`` plus its seed, steps and run folder, without a
    progress bar, with one checkpoint at the end, and without the preset's held-out guard
    (``train.eval``): the benchmark evaluates its own set."""
    run_keys = [f"train.seed={seed}", f"train.steps={steps}", f"train.output_dir={out}", "train.progress=false"]
    run_keys.append("train.eval=null")
    return load_config(config_name, [*overrides, *run_keys, f"train.checkpoint_every={steps}"])


def run(config_name: str, overrides: list[str], method: str, seed: int, args, workdir: Path) -> dict:
    out = workdir / f"{method}-{seed}"
    config = bench_config(config_name, [*overrides, *ESTIMATORS[method]], seed, args.steps, out)
    trainer = EvaluatingTrainer(config, args.eval_videos, args.eval_every)
    records = trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "method": method,
        "seed": seed,
        "curve": [{k: v for k, v in point.items() if k != "rewards"} for point in trainer.curve],
        "final_rewards": trainer.curve[-1]["rewards"],
        "start_rewards": trainer.curve[0]["rewards"],
        "train_reward": [r["reward_mean"] for r in records],
        "seconds_per_step": float(np.mean([r["step_time"] for r in records])),
        "backprop_depth": float(np.mean([r.get("backprop_depth", float("nan")) for r in records])),
    }


def summarise(runs: list[dict]) -> dict:
    """Per method, across seeds: start and end of every curve value (mean and std)."""
    table = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == method]
        row = {"seeds": len(mine), "seconds_per_step": float(np.mean([r["seconds_per_step"] for r in mine]))}
        row["backprop_depth"] = mine[0]["backprop_depth"]
        for key in ("reward", *GROUND_TRUTH_KEYS):
            start = np.array([r["curve"][0][key] for r in mine])
            end = np.array([r["curve"][-1][key] for r in mine])
            row[key] = {
                "start": float(start.mean()),
                "end": float(end.mean()),
                "gain": float((end - start).mean()),
                "gain_std": float((end - start).std(ddof=1)) if len(mine) > 1 else float("nan"),
            }
        # Paired per video (same prompt and seed before and after), pooled over seeds.
        diffs = np.concatenate([np.subtract(r["final_rewards"], r["start_rewards"]) for r in mine])
        row["reward"]["paired_gain_se"] = float(diffs.std(ddof=1) / np.sqrt(len(diffs)))
        table[method] = row
    return table


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("samples", "reward"), ("seconds", "reward"), ("samples", "colour"), ("samples", "all")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=100)
    for ax, (x_key, y_key) in zip(axes, panels, strict=True):
        for i, method in enumerate(dict.fromkeys(r["method"] for r in runs)):
            mine = [r for r in runs if r["method"] == method]
            xs = np.array([[p[x_key] for p in r["curve"]] for r in mine]).mean(0)
            ys = np.array([[p[y_key] for p in r["curve"]] for r in mine])
            mean, std = ys.mean(0), ys.std(0)
            ax.plot(xs, mean, label=method, color=f"C{i}")
            ax.fill_between(xs, mean - std, mean + std, color=f"C{i}", alpha=0.15)
        ax.set_xlabel("training samples" if x_key == "samples" else "training seconds")
        ax.set_ylabel("eval reward" if y_key == "reward" else f"ground truth: {y_key}")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle("mean ± std over seeds, fixed evaluation set")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value) applied to every run")
    parser.add_argument("--config", default="tiny-shapes")
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-videos", type=int, default=30)
    parser.add_argument("--out", default=BENCHMARKS / "training.json")
    parser.add_argument("--plot", default=BENCHMARKS / "training.png")
    parser.add_argument("--replot", action="store_true", help="only redraw --plot from the runs in --out")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(Path(args.out).read_text())["runs"], Path(args.plot))
        return

    runs, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.estimators:
            for seed in args.seeds:
                print(f"{method}, seed {seed}", flush=True)
                runs.append(run(args.config, args.overrides, method, seed, args, Path(tmp)))
    table = summarise(runs)
    print(
        f"\n{'method':<14}{'s/step':>8}{'depth':>7}{'reward start':>14}{'end':>8}{'gain ± std':>18}"
        + "".join(f"{k + ' end':>15}" for k in GROUND_TRUTH_KEYS)
    )
    for method, row in table.items():
        r = row["reward"]
        print(
            f"{method:<14}{row['seconds_per_step']:>8.2f}{row['backprop_depth']:>7.0f}{r['start']:>14.4f}"
            f"{r['end']:>8.4f}{r['gain']:>+11.4f} ± {r['gain_std']:.4f}"
            + "".join(f"{row[k]['start']:>7.3f}→{row[k]['end']:.3f}" for k in GROUND_TRUTH_KEYS)
        )
    result = {
        "command": "python tools/bench_training.py " + " ".join(sys.argv[1:]),  # all of it: --estimators, --out
        "config": load_config(args.config, args.overrides).to_dict(),
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "total_seconds": round(time.perf_counter() - start, 1),
        "summary": table,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    plot(runs, Path(args.plot))
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
