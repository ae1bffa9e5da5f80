"""Where RLR wins: a reward on an attribute the chain decides early (the ``tiny-shapes-direction`` task).

The prompts leave the motion direction open and the shapes CLIP rewards "moving down"
(``rlr_video/configs/tiny-shapes-direction.yaml``). The direction is settled in the noisy steps of the
chain (``benchmarks/tiny_shapes_decision_time.json``), which truncated backprop never reaches.
Every method trains the same preset from the same seeds with the same sample budget (steps x
batch); truncated backprop backpropagates through as many steps as RLR (``--depth``, the
preset's ``fo_steps``). The referee is the analytic ground truth on a fixed evaluation set:
``truth_target`` is the share of videos measured moving down, ``truth_all_three`` the share
also keeping the prompt's colour and shape. ``peak_memory_mib`` is one update's peak tensor
memory (``rlr_video.memory.probe.measure_peak``: the CPU tensor tracker here, CUDA's peak on a
GPU), measured apart from the timed training steps.

    python tools/bench_early_decision.py [--seeds 0 1 2] [--steps 16] [key=value ...]

writes ``benchmarks/early_decision.json`` and ``benchmarks/early_decision.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_training import EvaluatingTrainer, bench_config

from rlr_video.config import load_config
from rlr_video.memory.probe import measure_peak

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def method_overrides(depth: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Config overrides per method and per ablation (the preset is RLR's own setting)."""
    methods = {
        "rlr": [],
        "truncated_bp": ["estimator.name=truncated_bp", f"estimator.K={depth}"],  # AlignProp / VADER / DRaFT-K
        "truncated_bp_k1": ["estimator.name=truncated_bp", "estimator.K=1"],  # their usual K = 1
        "full_bp": ["estimator.name=full_bp"],
        "lr": ["estimator.name=lr"],  # DDPO: REINFORCE over every step
        # the state-dependent baseline (reward of x0_hat(x_t) per step) on top of the preset
        "rlr_state_baseline": ["estimator.state_baseline=true"],
        # GRPO-style groups: 2 prompts x 4 videos per batch, each against its own prompt's others
        "rlr_groups": ["train.group_size=4", "estimator.baseline=group"],
    }
    ablation = {  # the paper's: full RLR / without ZO / without HO / FO only
        "rlr": [],
        "rlr_no_zo": ["estimator.zo=none"],
        "rlr_no_ho": ["estimator.h=0"],
        "fo_only": ["estimator.h=0", "estimator.zo=none"],
    }
    return methods, ablation


def run(config_name: str, overrides: list[str], seed: int, args, workdir: Path) -> dict:
    """Train one method from one seed; evaluate, time and measure it."""
    out = workdir / f"run-{seed}"
    config = bench_config(config_name, overrides, seed, args.steps, out)
    target = config.reward["clip_words"]["target"]
    trainer = EvaluatingTrainer(config, args.eval_videos, args.eval_every, target=target)
    records = trainer.train()
    # One more update on a training batch, measured for peak memory (not part of training).
    prompts = list(trainer.prompts[: config.train.batch_size])
    generator = torch.Generator().manual_seed(seed)
    peak = measure_peak(lambda: trainer.estimator.estimate(trainer.backbone, trainer.reward, prompts, generator))
    shutil.rmtree(out, ignore_errors=True)
    start, end = trainer.curve[0], trainer.curve[-1]
    return {
        "truth_target": end["direction"],
        "truth_all_three": end["all"],
        "reward_gain": end["reward"] - start["reward"],
        "samples": end["samples"],
        "seconds": sum(r["step_time"] for r in records),
        "peak_memory_mib": peak.peak / 2**20,
        "start": {"truth_target": start["direction"], "truth_all_three": start["all"], "reward": start["reward"]},
        "backprop_depth": float(np.mean([r.get("backprop_depth", float("nan")) for r in records])),
        "curve": [{k: v for k, v in p.items() if k != "rewards"} for p in trainer.curve],
    }


PER_SEED = ("truth_target", "truth_all_three", "reward_gain", "samples", "seconds", "peak_memory_mib")


def collect(runs: list[dict]) -> dict:
    """Per-seed lists of every figure, their mean and standard error, and the start values."""
    entry = {k: [r[k] for r in runs] for k in PER_SEED}
    for k in PER_SEED:
        values = np.array(entry[k], dtype=float)
        entry[f"{k}_mean"] = float(values.mean())
        entry[f"{k}_se"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    entry["start"] = runs[0]["start"]
    entry["backprop_depth"] = runs[0]["backprop_depth"]
    entry["curves"] = [r["curve"] for r in runs]
    return entry


def verdict(methods: dict) -> dict:
    """The issue's targets, checked on the means (and the standard error of the difference)."""
    rlr, tbp, lr, full = (methods[k] for k in ("rlr", "truncated_bp", "lr", "full_bp"))
    diff = np.subtract(rlr["truth_target"], tbp["truth_target"])  # paired by seed
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {
        "rlr_minus_truncated_bp": float(diff.mean()),
        "rlr_minus_truncated_bp_se": se,
        "rlr_beats_truncated_bp_by_0.15_and_2se": bool(diff.mean() >= 0.15 and diff.mean() > 2 * se),
        "rlr_at_least_lr": bool(rlr["truth_target_mean"] >= lr["truth_target_mean"]),
        "rlr_within_0.1_of_full_bp": bool(rlr["truth_target_mean"] >= full["truth_target_mean"] - 0.1),
        "rlr_peak_at_most_half_of_full_bp": bool(rlr["peak_memory_mib_mean"] <= 0.5 * full["peak_memory_mib_mean"]),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {**result["methods"], **{k: v for k, v in result["ablation"].items() if k != "rlr"}}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
    for ax, (key, label) in zip(
        axes,
        [
            ("reward", "eval reward (shapes CLIP: moving down)"),
            ("direction", "ground truth: moving down"),
            ("all", "ground truth: down, colour and shape"),
        ],
        strict=True,
    ):
        for i, (name, entry) in enumerate(groups.items()):
            xs = np.array([[p["samples"] for p in c] for c in entry["curves"]]).mean(0)
            ys = np.array([[p[key] for p in c] for c in entry["curves"]])
            ax.plot(xs, ys.mean(0), label=name, color=f"C{i}", ls="--" if name in result["ablation"] else "-")
            ax.fill_between(xs, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), color=f"C{i}", alpha=0.12)
        ax.set_xlabel("training samples")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("tiny-shapes-direction: mean ± std over seeds, fixed evaluation set")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value) for every run")
    parser.add_argument("--config", default="tiny-shapes-direction")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=8)
    parser.add_argument("--eval-videos", type=int, default=24)
    parser.add_argument("--only", nargs="+", help="run only these names; the others are kept from --out")
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "early_decision.json")
    parser.add_argument("--plot", type=Path, default=BENCHMARKS / "early_decision.png")
    args = parser.parse_args()

    base = load_config(args.config, args.overrides)
    methods, ablation = method_overrides(base.estimator.fo_steps)
    names = dict.fromkeys([*methods, *ablation])
    names = [n for n in names if not args.only or n in args.only]
    start, runs = time.perf_counter(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            overrides = [*args.overrides, *(methods.get(name) or ablation[name])]
            runs[name] = []
            for seed in args.seeds:
                print(f"{name}, seed {seed}", flush=True)
                runs[name].append(run(args.config, overrides, seed, args, Path(tmp)))
    entries = {name: collect(r) for name, r in runs.items()}
    command = "python tools/bench_early_decision.py " + " ".join(
        [
            *args.overrides,
            f"--seeds {' '.join(map(str, args.seeds))}",
            f"--steps {args.steps}",
            f"--eval-every {args.eval_every}",
            f"--eval-videos {args.eval_videos}",
        ]
    )
    seconds = round(time.perf_counter() - start, 1)
    if args.only and args.out.exists():  # rerun some names: keep the others' recorded results
        old = json.loads(args.out.read_text())
        entries = {**old["methods"], **old["ablation"], **entries}
        command = f"{old['command']}; then {command} --only {' '.join(args.only)}"
        seconds += old["total_seconds"]
    result = {
        "command": command,
        "config": base.to_dict(),
        "overrides": {**methods, **ablation},
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "total_seconds": seconds,
        "methods": {k: entries[k] for k in methods if k in entries},
        "ablation": {k: entries[k] for k in ablation if k in entries},
    }
    if all(k in result["methods"] for k in ("rlr", "truncated_bp", "lr", "full_bp")):
        result["verdict"] = verdict(result["methods"])
    print(f"\n{'name':<16}{'truth_target':>16}{'all three':>16}{'reward gain':>16}{'s/update':>10}{'peak MiB':>10}")
    for name, e in entries.items():
        print(
            f"{name:<16}{e['truth_target_mean']:>9.3f} ± {e['truth_target_se']:.3f}"
            f"{e['truth_all_three_mean']:>9.3f} ± {e['truth_all_three_se']:.3f}"
            f"{e['reward_gain_mean']:>+9.3f} ± {e['reward_gain_se']:.3f}"
            f"{e['seconds_mean'] / args.steps:>10.2f}{e['peak_memory_mib_mean']:>10.1f}"
        )
    print("start:", entries[names[0]]["start"])
    print("verdict:", result.get("verdict"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
