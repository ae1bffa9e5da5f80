"""How much of one gradient estimate is signal, on the testbed model (not a toy).

For a reward, the "true" gradient is the mean of ``--truth-draws`` full-backprop estimates on
one batch of held-out prompts (its own split-half cosine says how settled it is). Every
estimator then draws ``--draws`` estimates on the same prompts with other seeds; reported are
their mean norm, the mean cosine of a single draw to the truth, and the cosine of their mean.
A single-draw cosine near 0 with a norm far above the truth's means the optimizer sees mostly
noise: that many more samples per update are needed for the same progress.

    python tools/bench_gradient_snr.py --reward clip [--draws 8] [--out benchmarks/gradient_snr.json]
    python tools/bench_gradient_snr.py --model tiny-shapes-wan --reward brightness   # the flow SDE's presets
    python tools/bench_gradient_snr.py --model tiny-shapes-wan --reward down         # ... the direction task
    python tools/bench_gradient_snr.py --model tiny-shapes-wan --reward brightness --group-size 4   # 2 prompts x 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from rewards import build_reward
from rlr_video.backbones import load_backbone
from rlr_video.estimators import LR, RLR, FullBP, TruncatedBP
from rlr_video.testbed.shapes import heldout_prompts

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

REWARDS = {
    "clip": {"clip": {"model": "shapes-clip"}},
    "brightness": "brightness",
    "color_match": "color_match",
    # the direction presets' reward: the shapes CLIP's probability of "moving down", softened
    "down": {"clip_words": {"target": {"direction": "down"}, "temperature": 4}},
}
# Each model on its presets' chain: DDIM at eta 1, the flow SDE at noise level 0.7 (Flow-GRPO's).
ETA = {"tiny-shapes": 1.0, "tiny-shapes-wan": 0.7}


def draws(estimator, backbone, reward, prompts, n: int, seed: int, desc: str) -> torch.Tensor:
    params = backbone.trainable_parameters()
    rows = []
    for i in tqdm(range(n), desc=desc, leave=False):
        for p in params:
            p.grad = None
        estimator.estimate(backbone, reward, prompts, torch.Generator().manual_seed(seed + i))
        rows.append(torch.cat([p.grad.flatten() for p in params]))
    return -torch.stack(rows)  # p.grad holds -grad E[R]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(ETA), default="tiny-shapes")
    parser.add_argument("--reward", choices=list(REWARDS), default="clip")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--truth-draws", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--group-size", type=int, default=1, help="videos per prompt (GRPO's groups): batch-size / k prompts, k each"
    )
    parser.add_argument("--out", default=BENCHMARKS / "gradient_snr.json")
    args = parser.parse_args()

    torch.manual_seed(0)  # the LoRA initialisation
    backbone = load_backbone(args.model, num_steps=10, eta=ETA[args.model], lora_rank=8)  # its frames, guidance
    reward = build_reward(REWARDS[args.reward])
    if args.batch_size % args.group_size:
        parser.error(f"--batch-size {args.batch_size} is not a multiple of --group-size {args.group_size}")
    k = args.group_size
    prompts = [p for p in heldout_prompts()[: args.batch_size // k] for _ in range(k)]
    start = time.perf_counter()
    truth_rows = draws(FullBP(), backbone, reward, prompts, args.truth_draws, 10_000, "full_bp (truth)")
    truth = truth_rows.mean(0)
    half = args.truth_draws // 2
    table = {
        "truth": {
            "norm": float(truth.norm()),
            "split_half_cosine": cosine(truth_rows[:half].mean(0), truth_rows[half:].mean(0)),
        }
    }
    estimators = {
        "full_bp": FullBP(),
        "truncated_bp(K=1)": TruncatedBP(K=1),
        "lr (DDPO)": LR(),
        "rlr(h=2, fo_steps=2)": RLR(h=2, fo_steps=2),
        "rlr(h=2, fo_steps=5)": RLR(h=2, fo_steps=5),
        "rlr(h=2, fo_steps=5, state_baseline)": RLR(h=2, fo_steps=5, state_baseline=True),
    }
    if k > 1:  # in groups, the baseline GRPO-style trainers take: the other videos of the prompt
        estimators["rlr(h=2, fo_steps=5, baseline=group)"] = RLR(h=2, fo_steps=5, baseline="group")
    for name, estimator in estimators.items():
        rows = draws(estimator, backbone, reward, prompts, args.draws, 20_000, name)
        cosines = torch.tensor([cosine(r, truth) for r in rows])
        table[name] = {
            "norm": float(rows.norm(dim=1).mean()),
            "single_draw_cosine": float(cosines.mean()),
            "single_draw_cosine_se": float(cosines.std() / len(rows) ** 0.5) if len(rows) > 1 else None,
            "mean_cosine": cosine(rows.mean(0), truth),
        }
    print(
        f"reward {args.reward}: truth norm {table['truth']['norm']:.4f}, "
        f"split-half cosine {table['truth']['split_half_cosine']:.3f}"
    )
    print(f"{'estimator':<24}{'norm':>10}{'cos(draw, truth) ± se':>24}{f'cos(mean of {args.draws})':>18}")
    for name, row in table.items():
        if name != "truth":
            single = f"{row['single_draw_cosine']:.3f} ± {row['single_draw_cosine_se'] or 0:.3f}"
            print(f"{name:<24}{row['norm']:>10.3f}{single:>24}{row['mean_cosine']:>18.3f}")
    result = {
        "command": f"python tools/bench_gradient_snr.py --model {args.model} --reward {args.reward} "
        f"--draws {args.draws} --truth-draws {args.truth_draws} --batch-size {args.batch_size}"
        + (f" --group-size {k}" if k > 1 else ""),
        "model": f"{args.model}, {backbone.num_frames} frames, 10 steps of {type(backbone.transition).__name__}, "
        f"eta {ETA[args.model]:g}, guidance {backbone.guidance_scale:g}, LoRA rank 8",
        "prompts": prompts,
        "seconds": round(time.perf_counter() - start, 1),
        "table": table,
    }
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.is_file() else {}
    key = args.reward if args.model == "tiny-shapes" else f"{args.model}:{args.reward}"
    key += f":groups of {k}" if k > 1 else ""
    existing[key] = result  # one entry per model and reward
    out.write_text(json.dumps(existing, indent=1) + "\n")


if __name__ == "__main__":
    main()
