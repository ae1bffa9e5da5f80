"""Evaluate the tiny-shapes model's prompt following with the analytic ground-truth scorer.

Loads the saved folder with diffusers' ``TextToVideoSDPipeline.from_pretrained`` (the
code path of hub models; the scheduler is its saved ``DDIMScheduler``), samples every
held-out colour x shape x direction combination on every background, and scores the
videos from pixels (``rlr_video.testbed.scorer``). Training combinations are sampled too,
for comparison: a model that only memorised its training captions scores well on
``train`` and poorly on ``heldout``.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/eval_tiny_shapes.py --threads 2

writes ``benchmarks/tiny_shapes_eval.json`` (and, with ``--sheet``, a PNG of samples).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rlr_video.testbed import scorer, shapes  # noqa: E402
from rlr_video.testbed.tiny_model import GUIDANCE_SCALE, TINY_SHAPES_DIR, load_pipeline, sample  # noqa: E402

CHANCE = {"colour": 1 / len(shapes.COLOURS), "shape": 1 / len(shapes.SHAPES), "direction": 1 / len(shapes.DIRECTIONS)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=TINY_SHAPES_DIR)
    p.add_argument("--per-combo", type=int, default=6, help="videos per combination")
    p.add_argument("--train-combos", type=int, default=15, help="training combos to compare (0: none)")
    p.add_argument("--steps", type=int, default=25, help="DDIM sampling steps")
    p.add_argument("--guidance", type=float, default=GUIDANCE_SCALE)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--batch", type=int, default=90)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "tiny_shapes_eval.json")
    p.add_argument("--sheet", type=Path, default=None, help="also save a PNG of samples")
    return p.parse_args(argv)


def training_summary(info: dict) -> dict:
    """The run that produced the weights, and the runs it was initialised from (``--init``)."""
    keys = ("command", "device", "threads", "steps", "seconds", "batch_size", "parameters")
    summary = {k: info.get(k) for k in keys}
    stages, inner = [], info.get("init_info")
    while inner:
        stages.append({k: inner.get(k) for k in keys})
        inner = inner.get("init_info")
    if stages:
        summary["initialised_from"] = stages  # nearest first
        summary["total_steps"] = info.get("steps", 0) + sum(st.get("steps") or 0 for st in stages)
        summary["total_seconds"] = round(info.get("seconds", 0) + sum(st.get("seconds") or 0 for st in stages), 1)
    return summary


def summarise(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of every score, rounded (size and speed: over valid videos; None if none)."""
    out = {}
    for k, v in scores.items():
        finite = v[np.isfinite(v)]
        out[k] = round(float(finite.mean()), 4) if len(finite) else None
    return out


def save_sheet(videos: torch.Tensor, path: Path, rows: int = 15, upscale: int = 4) -> None:
    """A PNG with one video per row (frames left to right), nearest-neighbour upscaled."""
    from PIL import Image

    v = videos[:rows]  # (R, F, 3, H, W)
    r, f, c, h, w = v.shape
    grid = v.permute(0, 3, 1, 4, 2).reshape(r * h, f * w, c)  # rows of frames
    img = (grid.clamp(0, 1).numpy() * 255).astype(np.uint8)
    img = img.repeat(upscale, axis=0).repeat(upscale, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def main(argv: list[str] | None = None) -> dict:
    """Sample, score, write the report; returns it."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    pipe = load_pipeline(args.model, device=args.device)
    heldout = sorted(shapes.HELDOUT_COMBOS)
    rng = np.random.default_rng(args.seed)
    train_pick = rng.choice(len(shapes.TRAIN_COMBOS), args.train_combos, replace=False)
    train = [shapes.TRAIN_COMBOS[i] for i in sorted(train_pick)]
    report: dict = {
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "pipeline": type(pipe).__name__,
        "scheduler": type(pipe.scheduler).__name__,
        "sampling": {"steps": args.steps, "guidance_scale": args.guidance, "eta": args.eta, "seed": args.seed},
        "chance": {k: round(v, 4) for k, v in CHANCE.items()},
        "command": "python tools/testbed/eval_tiny_shapes.py " + " ".join(argv or sys.argv[1:]),
    }
    info_path = args.model / "train_info.json"
    if info_path.exists():
        report["training"] = training_summary(json.loads(info_path.read_text()))
    videos_by_split = {}
    for split, combos in (("heldout", heldout), ("train", train)):
        if not combos:  # --train-combos 0: held-out only
            continue
        prompts = shapes.combo_prompts(combos, args.per_combo)
        videos = torch.cat(
            [
                sample(pipe, prompts[i : i + args.batch], args.steps, args.guidance, seed=args.seed + i, eta=args.eta)
                for i in range(0, len(prompts), args.batch)
            ]
        )
        videos_by_split[split] = videos
        scores = scorer.score_batch(videos, prompts)
        per_combo = {}
        for j, combo in enumerate(combos):
            sl = slice(j * args.per_combo, (j + 1) * args.per_combo)
            per_combo[" ".join(combo)] = {a: round(float(scores[a][sl].mean()), 3) for a in scorer.ATTRIBUTES}
        report[split] = {"videos": len(prompts), **summarise(scores), "per_combo": per_combo}
        print(split, {k: v for k, v in report[split].items() if k != "per_combo"}, flush=True)
    # The scorer on real testbed videos of the same prompts: its own ceiling.
    real = shapes.make_batch(len(heldout) * args.per_combo, args.seed, "heldout")
    report["scorer_on_real_heldout"] = summarise(scorer.score_batch(real.videos, real.captions))
    report["eval_seconds"] = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.sheet:
        # One sample per held-out combination (the first background of each).
        save_sheet(videos_by_split["heldout"][:: args.per_combo], args.sheet)
    print(f"wrote {args.out} in {report['eval_seconds']:.0f}s")
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
