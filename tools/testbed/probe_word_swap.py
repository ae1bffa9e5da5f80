"""Which prompt words does the tiny-shapes model listen to? Same noise, one word swapped.

For each held-out prompt and seed, samples every colour (then every shape, every direction)
from the same starting noise with deterministic DDIM (eta 0), and measures the videos with
the analytic scorer (``rlr_video.testbed.word_swap``). ``responds`` near 0 means the noise,
not the word, decides that attribute; a quicker and sharper check of a new checkpoint than
``tools/testbed/eval_tiny_shapes.py``.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/probe_word_swap.py [--model DIR] [--seeds 2]

prints a table and writes ``benchmarks/tiny_shapes_word_swap.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rlr_video.testbed.shapes import heldout_prompts  # noqa: E402
from rlr_video.testbed.tiny_model import GUIDANCE_SCALE, TINY_SHAPES_DIR, load_pipeline, sample  # noqa: E402
from rlr_video.testbed.word_swap import word_swap  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Probe, print, save; returns the report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=TINY_SHAPES_DIR)
    p.add_argument("--seeds", type=int, default=2, help="noise draws per held-out prompt")
    p.add_argument("--steps", type=int, default=25, help="DDIM sampling steps")
    p.add_argument("--guidance", type=float, default=GUIDANCE_SCALE)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "tiny_shapes_word_swap.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    pipe = load_pipeline(args.model)

    def sample_fn(prompts: list[str], seed: int) -> torch.Tensor:
        return sample(pipe, prompts, args.steps, args.guidance, seed=seed, eta=0.0, same_noise=True)

    prompts = heldout_prompts()
    report = {
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "command": "python tools/testbed/probe_word_swap.py " + " ".join(argv or sys.argv[1:]),
        "sampling": {"steps": args.steps, "guidance_scale": args.guidance, "eta": 0.0},
        "prompts": len(prompts),
        "seeds": args.seeds,
        "attributes": word_swap(sample_fn, prompts, list(range(args.seeds))),
    }
    report["seconds"] = round(time.time() - start, 1)
    print(f"{len(prompts)} held-out prompts x {args.seeds} seeds")
    print(f"{'attribute':<10} {'follows':>8} {'chance':>7} {'responds':>9}")
    for name, row in report["attributes"].items():
        print(f"{name:<10} {row['follows']:>8.3f} {row['chance']:>7.3f} {row['responds']:>9.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
