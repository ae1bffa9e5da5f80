"""Per-step loudness of the likelihood-ratio terms of DDIM schedules: which steps to cover with ``fo_steps``.

Prints ``|d mean / d output| / noise std`` (``rlr_video.chain.lr_scale``) of the last steps of
each schedule, relative to the median step, for eta 1. A step far above the others is one
whose LR term would dominate RLR's variance; the last ``fo_steps`` steps are pathwise and
have none.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/lr_term_scale.py [--model DIR --steps N ...]

Without ``--model`` it shows the shipped tiny-shapes (10 steps, its preset) and the
SD-1.5 / ModelScope-family schedule (``scaled_linear`` betas 0.00085-0.012, ``steps_offset`` 1,
leading spacing, as in those models' public ``scheduler_config.json``) at the 25 and 40 steps
of the ``animatediff-aesthetic`` and ``zeroscope-clip`` presets. Writes
``benchmarks/lr_term_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from diffusers import DDIMScheduler

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rlr_video.chain.lr_scale import lr_term_scales  # noqa: E402
from rlr_video.chain.transitions import DDIMTransition  # noqa: E402
from rlr_video.testbed.tiny_model import TINY_SHAPES_DIR  # noqa: E402

SD_FAMILY = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
}


def profile(scheduler: DDIMScheduler, num_steps: int, last: int = 4) -> dict:
    """Timesteps, noise std and relative LR scale of the ``last`` steps (chain order)."""
    transition = DDIMTransition.from_scheduler(scheduler, num_steps, eta=1.0)
    scales = lr_term_scales(transition, num_steps)
    median = statistics.median(scales)
    steps = range(min(last, num_steps), 0, -1)
    return {
        "num_steps": num_steps,
        "median_scale": float(f"{median:.6g}"),  # more digits are float noise across machines
        "last_steps": [
            {
                "step": s,
                "t": int(transition.timestep(s)),
                "noise_std": round(transition.noise_std(s), 4),
                "relative_scale": round(scales[s - 1] / median, 2),
            }
            for s in steps
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    """Print and save the profiles."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="a diffusers folder with scheduler/")
    p.add_argument("--steps", type=int, nargs="+", default=[25])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "lr_term_scale.json")
    args = p.parse_args(argv)
    if args.model is not None:
        cases = {str(args.model): (DDIMScheduler.from_pretrained(args.model, subfolder="scheduler"), args.steps)}
    else:
        cases = {
            "tiny-shapes": (DDIMScheduler.from_pretrained(TINY_SHAPES_DIR, subfolder="scheduler"), [10]),
            "sd-1.5 / modelscope family": (DDIMScheduler(**SD_FAMILY), [25, 40]),
        }
    report = {}
    for name, (scheduler, step_counts) in cases.items():
        for n in step_counts:
            key = f"{name}, {n} steps"
            report[key] = profile(scheduler, n)
            cells = ", ".join(
                f"t={row['t']}: std {row['noise_std']}, LR {row['relative_scale']}x"
                for row in report[key]["last_steps"]
            )
            print(f"{key}: {cells}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
