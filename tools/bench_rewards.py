"""Reward throughput on 16-frame 256×256 videos: videos per second, forward and forward+backward.

Two model sizes, both with random weights built at run time (nothing is downloaded):

- ``tiny``: the test suite's tiny configs (1-layer 32-wide towers);
- ``base``: real architectures at ViT-B size: open_clip ``ViT-B-32`` (clip, temporal/clip), a
  ViT-B-32 tower with the 768-d embedding for aesthetic (its real head shapes), transformers'
  default CLIP (ViT-B/32) for pickscore and default ViT (ViT-B/16, DINO's real size) for
  temporal/dino. hpsv2 costs what clip costs on the same tower.

    python tools/bench_rewards.py [--batch 2] [--rounds 10 3] [--sizes tiny base] [--out benchmarks/rewards.json]

Each number is a reward's fastest call over rounds that interleave all rewards, after a warm-up
round. They depend on the machine and on whatever else runs on it; the JSON records both (core
count, load average).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tiny random-weight model builders live with the tests

import reward_fixtures as fx  # noqa: E402

from rewards import build_reward  # noqa: E402

FRAMES, SIZE = 16, 256


def specs(size: str) -> dict[str, tuple[str, dict]]:
    """label → (reward name, options) for one model size."""
    fx.register_tiny_open_clip()
    if size == "tiny":
        return {
            "flicker": ("flicker", {}),
            "clip": ("clip", {"model": fx.TINY, "pretrained": fx.open_clip_weights()}),
            "aesthetic": (
                "aesthetic",
                {"model": fx.TINY_768, "pretrained": fx.open_clip_weights(fx.TINY_768), "head": fx.aesthetic_head()},
            ),
            "temporal/dino": ("temporal", {"model": fx.tiny_dino()}),
            "temporal/clip": ("temporal", {"backbone": "clip", "model": fx.TINY, "pretrained": fx.open_clip_weights()}),
            "hpsv2": ("hpsv2", {"model": fx.TINY, "pretrained": fx.open_clip_weights(fx.TINY, 1)}),
            "pickscore": ("pickscore", {"model": fx.tiny_pickscore()}),
        }
    return {
        "clip": ("clip", {"model": "ViT-B-32", "pretrained": None}),
        "aesthetic": ("aesthetic", {"model": fx.B32_768, "pretrained": None, "head": fx.aesthetic_head()}),
        "temporal/dino": ("temporal", {"model": fx.tiny_dino(size="b16")}),
        "temporal/clip": ("temporal", {"backbone": "clip", "model": "ViT-B-32", "pretrained": None}),
        "pickscore": ("pickscore", {"model": fx.tiny_pickscore(size="b32")}),
    }


def timed_call(reward, frames: torch.Tensor, prompts: list[str], backward: bool) -> float:
    """Seconds for one call (with ``backward``: the score's backward pass to the frames too)."""
    x = frames.clone().requires_grad_(backward)
    start = time.perf_counter()
    if backward:
        reward(x, prompts).sum().backward()
    else:
        with torch.inference_mode():
            reward(x, prompts)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="videos per call")
    parser.add_argument(
        "--rounds",
        type=int,
        nargs=2,
        default=[10, 3],
        metavar=("TINY", "BASE"),
        help="timed rounds for the tiny and the base models (after one warm-up round)",
    )
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "rewards.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*random weights.*")

    load_before = os.getloadavg()
    frames = torch.rand(args.batch, FRAMES, 3, SIZE, SIZE)
    prompts = ["a red circle moving left"] * args.batch
    rows = []
    print(f"{'size':<6} {'reward':<14} {'forward v/s':>12} {'fwd+bwd v/s':>12}")
    for size in args.sizes:
        rewards = {label: build_reward(name, **options) for label, (name, options) in specs(size).items()}
        rounds = args.rounds[0] if size == "tiny" else args.rounds[1]
        best = {label: [math.inf, math.inf] for label in rewards}
        # Rounds interleave the rewards, so a burst of load from other processes slows one round
        # of every reward rather than every call of one; the fastest call of each is kept.
        for round_ in range(rounds + 1):
            for label, reward in rewards.items():
                for i, backward in enumerate((False, True)):
                    seconds = timed_call(reward, frames, prompts, backward)
                    if round_:  # round 0 warms up (allocations, text caches)
                        best[label][i] = min(best[label][i], seconds)
        for label, (forward, backward) in best.items():
            row = {"size": size, "reward": label, "rounds": rounds}
            rows.append(
                {**row, "forward_videos_per_s": args.batch / forward, "backward_videos_per_s": args.batch / backward}
            )
            print(f"{size:<6} {label:<14} {args.batch / forward:>12.2f} {args.batch / backward:>12.2f}", flush=True)
        del rewards
    result = {
        "video": {"frames": FRAMES, "height": SIZE, "width": SIZE, "batch": args.batch},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": "cpu",
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "timing": "fastest call of each reward over interleaved rounds, after one warm-up round",
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
