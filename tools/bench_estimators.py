"""Estimator accuracy at equal compute on the toy video backbone.

For every estimator: draw many independent gradient estimates, measure the cost of one
in denoiser-call equivalents (a backward counts as two forwards; each decode + reward call
beyond the one every estimator makes, e.g. the state baseline's, as one forward), and report, at the
same compute budget, the mean squared error to the exact gradient and the cosine to it.
The exact gradient is FullBP's mean over many more draws (its own standard error is
reported and subtracted from the error estimates).

    python tools/bench_estimators.py [--draws 400] [--truth-draws 4000] [--out benchmarks/estimators.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

from rlr_video.backbones.toy import ToyBackbone
from rlr_video.estimators import LR, RLR, FullBP, TruncatedBP

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle", "a white star"]
GROUP = 4  # videos per prompt in the GRPO-style rows ("group": 2 prompts x 4 videos in a batch of 8)


class ColourReward:
    """Smooth, nonlinear reward on decoded frames: red high, blue low."""

    name, differentiable = "colour", True

    def __call__(self, frames: torch.Tensor, prompts) -> torch.Tensor:
        red, blue = frames[:, :, 0], frames[:, :, 2]
        return -(red - 0.8).pow(2).flatten(1).mean(1) - (blue - 0.2).pow(2).flatten(1).mean(1)


def estimators() -> dict[str, object]:
    table: dict[str, object] = {"full_bp": FullBP(), "truncated_bp(K=1)": TruncatedBP(K=1), "lr (DDPO)": LR()}
    for h in (1, 2, 4):
        for zo in ("latent_lr", "param_es", "none"):
            table[f"rlr(h={h}, zo={zo})"] = RLR(h=h, zo=zo)
    # unbiased truncated backprop: the low-noise last steps pathwise, the rest HO + ZO
    for fo_steps in (3, 5):
        table[f"rlr(h=2, fo_steps={fo_steps})"] = RLR(h=2, fo_steps=fo_steps)
    # the state-dependent baseline: per step, the reward of x0_hat(x_t), given to LR as well
    table["lr (DDPO), state baseline"] = LR(state_baseline=True)
    for fo_steps in (1, 5):
        table[f"rlr(h=2, fo_steps={fo_steps}), state baseline"] = RLR(h=2, fo_steps=fo_steps, state_baseline=True)
    # group sampling: the same prompts in groups, advantages against the batch or the group
    table["lr (DDPO), groups, loo"] = LR()
    table["lr (DDPO), groups, group"] = LR(baseline="group")
    table["lr (DDPO), groups, group, state baseline"] = LR(baseline="group", state_baseline=True)
    for fo_steps in (1, 5):
        table[f"rlr(h=2, fo_steps={fo_steps}), groups, loo"] = RLR(h=2, fo_steps=fo_steps)
        table[f"rlr(h=2, fo_steps={fo_steps}), groups, group"] = RLR(h=2, fo_steps=fo_steps, baseline="group")
    # deeper pathwise tails at the same compute: the variance falls with the backprop depth
    for fo_steps in (7, 8):
        table[f"rlr(h=2, fo_steps={fo_steps}), groups, loo"] = RLR(h=2, fo_steps=fo_steps)
    table["rlr(h=2, fo_steps=5), groups, group, state baseline"] = RLR(
        h=2, fo_steps=5, baseline="group", state_baseline=True
    )
    return table


def batch_prompts(name: str, batch: int) -> list[str]:
    """Cycled prompts, or for the "groups" rows each prompt ``GROUP`` times in a row."""
    if "groups" in name:
        return [PROMPTS[(i // GROUP) % len(PROMPTS)] for i in range(batch)]
    return [PROMPTS[i % len(PROMPTS)] for i in range(batch)]


def sample(estimator, backbone, reward, n: int, batch: int, seed: int, desc: str):
    """n gradient estimates of +grad E[R] as rows, their mean cost, the most denoiser calls
    held in one backward graph (what memory scales with) and the wall time per estimate."""
    params = backbone.trainable_parameters()
    generator = torch.Generator().manual_seed(seed)
    prompts = batch_prompts(desc, batch)
    rows, cost, depth = [], 0.0, 0.0
    start = time.perf_counter()
    for _ in tqdm(range(n), desc=desc, leave=False):
        for p in params:
            p.grad = None
        stats = estimator.estimate(backbone, reward, prompts, generator).stats
        cost += stats["calls_forward"] + 2 * stats["calls_backward"] + stats["calls_reward"] - 1
        depth = max(depth, stats["backprop_depth"])
        rows.append(-torch.cat([p.grad.flatten() for p in params]).double())
    return torch.stack(rows), cost / n, depth, (time.perf_counter() - start) / n


def at_equal_compute(samples: torch.Tensor, cost: float, budget: float, truth: torch.Tensor, truth_full: torch.Tensor):
    """MSE and cosine of an average of budget/cost draws (at least one draw), and the
    largest z-score of the long-run mean against the truth (bias shows as |z| >> 4)."""
    truth_var = float(truth_full.var(0).sum()) / len(truth_full)
    n_draws = max(1, int(budget // cost))
    mean = samples.mean(0)
    var = float(samples.var(0).sum())
    # ||mean - truth||^2 also holds the sampling noise of both means: remove it
    bias2 = max(0.0, float((mean - truth).pow(2).sum()) - var / len(samples) - truth_var)
    mse = bias2 + var / n_draws
    # cosine of averages of n_draws draws; with fewer draws than that, of one average of them all
    group = min(n_draws, len(samples))
    if group < n_draws:
        print(f"warning: --draws {len(samples)} < the {n_draws} draws the budget allows: cosine of {group}")
    groups = samples[: len(samples) // group * group].reshape(-1, group, samples.shape[1]).mean(1)
    cosine = torch.nn.functional.cosine_similarity(groups, truth.expand_as(groups), dim=1)
    se2 = samples.var(0) / len(samples) + truth_full.var(0) / len(truth_full)
    return {
        "max_abs_z": float(((mean - truth).abs() / se2.clamp_min(1e-30).sqrt()).max()),
        "draws_at_budget": n_draws,
        "cosine_draws": group,
        "mse": mse,
        "relative_mse": mse / float(truth.pow(2).sum()),
        "bias_sq": bias2,
        "variance_per_draw": var,
        "cosine_mean": float(cosine.mean()),
        "cosine_se": float(cosine.std() / math.sqrt(len(cosine))) if len(cosine) > 1 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="chain length T")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--draws", type=int, default=400, help="estimates per estimator")
    parser.add_argument("--truth-draws", type=int, default=4000, help="FullBP draws averaged for the truth")
    parser.add_argument("--budget-fullbp", type=float, default=8, help="budget, in FullBP estimates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "estimators.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the toy model is tiny: one thread is fastest

    backbone = ToyBackbone.create(num_steps=args.steps, seed=args.seed)
    reward = ColourReward()
    n_params = sum(p.numel() for p in backbone.trainable_parameters())
    full, full_cost, _, _ = sample(FullBP(), backbone, reward, args.truth_draws, args.batch, 10_000, "truth")
    truth = full.mean(0)
    truth_var = float(full.var(0).sum()) / len(full)  # of the mean
    budget = args.budget_fullbp * full_cost

    # The grouped batch holds other prompts, so its objective (and truth) is its own.
    full_groups, _, _, _ = sample(FullBP(), backbone, reward, args.truth_draws, args.batch, 10_001, "truth, groups")
    results = {}
    for name, estimator in estimators().items():
        samples, cost, depth, seconds = sample(estimator, backbone, reward, args.draws, args.batch, args.seed, name)
        results[name] = {"cost_per_draw": cost, "backprop_depth": depth, "seconds_per_draw": seconds}
        reference = full_groups if "groups" in name else full
        results[name].update(at_equal_compute(samples, cost, budget, reference.mean(0), reference))

    columns = ("cost", "depth", "n@budget", "rel. MSE", "max|z|", "cosine")
    header = f"{'estimator':36s} " + " ".join(f"{c:>{w}s}" for c, w in zip(columns, (5, 5, 8, 10, 8, 14)))
    print(
        f"\nT={args.steps}, batch={args.batch}, {n_params} trainable parameters, budget = "
        f"{budget:.0f} call-equivalents ({args.budget_fullbp:g} FullBP draws); truth from {args.truth_draws} "
        f"FullBP draws (relative se {math.sqrt(truth_var / float(truth.pow(2).sum())):.3f})\n{header}"
    )
    norm2 = float(truth.pow(2).sum())
    for name, r in results.items():
        se = r["cosine_se"]
        cos = f"{r['cosine_mean']:.3f} ± {se:.3f}" if se == se else f"{r['cosine_mean']:.3f} (one average)"
        print(
            f"{name:36s} {r['cost_per_draw']:5.0f} {r['backprop_depth']:5.0f} {r['draws_at_budget']:8d} "
            f"{r['relative_mse']:10.3g} {r['max_abs_z']:8.3g} {cos:>14s}"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "trainable_parameters": n_params,
        "budget_call_equivalents": budget,
        "truth_norm": math.sqrt(norm2),
        "truth_relative_se": math.sqrt(truth_var / norm2),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
