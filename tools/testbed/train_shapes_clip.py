"""Train the shapes CLIP (open_clip, custom config) contrastively on moving-shapes videos.

Each batch holds distinct captions (colour x shape x direction x background), so the
symmetric InfoNCE loss never treats a duplicate caption as a negative. Videos come
from the training combinations only; retrieval is reported on held-out combinations:

* ``top1_all``: the true caption ranks first among every caption of the grammar
  (6 colours x 3 shapes x 5 directions x 6 backgrounds = 540);
* ``top1_<attribute>``: the true caption beats the captions that differ from it in
  that attribute only (the hard distractors).

Writes ``rlr_video/assets/shapes-clip/`` (open_clip local-dir, float16 safetensors)
and ``benchmarks/shapes_clip.json``.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/train_shapes_clip.py --steps 3000 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rlr_video.testbed import shapes  # noqa: E402
from rlr_video.testbed.clip import (  # noqa: E402
    MODEL_NAME,
    SHAPES_CLIP_DIR,
    ShapesClip,
    load_shapes_clip,
    model_config,
    register_config,
    save_shapes_clip,
)

ATTRS = ("colour", "shape", "direction", "background")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-videos", type=int, default=300, help="held-out videos to rank")
    p.add_argument("--out", type=Path, default=SHAPES_CLIP_DIR, help="default: the shipped model (replaced)")
    p.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "shapes_clip.json")
    p.add_argument(
        "--direction-groups",
        type=float,
        default=0.5,
        help="fraction of each batch in direction-only hard-negative groups",
    )
    p.add_argument("--init", type=Path, default=None, help="start from a saved shapes CLIP")
    p.add_argument("--time-limit", type=float, default=0.0, help="minutes; the LR schedule ends there")
    return p.parse_args(argv)


def all_captions() -> list[tuple[str, str, str, str]]:
    """Every (colour, shape, direction, background) the caption grammar allows."""
    return list(itertools.product(shapes.COLOURS, shapes.SHAPES, shapes.DIRECTIONS, shapes.BACKGROUNDS))


def distinct_batch(rng: np.random.Generator, n: int, split: str, direction_groups: float = 0.0) -> shapes.Batch:
    """``n`` videos with pairwise distinct captions from ``split``'s combinations.

    A ``direction_groups`` fraction of the batch comes in groups that share colour,
    shape and background and differ only in direction: hard negatives for motion, the
    attribute a contact sheet shows least directly (colour and background are learnt
    within a few hundred steps from random batches, direction is not).
    """
    allowed = set(shapes.combos_for(split))
    keys = [k for k in all_captions() if k[:3] in allowed]
    chosen: list[tuple[str, str, str, str]] = []
    seen: set[tuple[str, str, str, str]] = set()
    while len(chosen) < n * direction_groups:
        colour, shape, _, background = keys[int(rng.integers(len(keys)))]
        group = [(colour, shape, d, background) for d in shapes.DIRECTIONS]
        group = [k for k in group if k[:3] in allowed and k not in seen]
        chosen += group
        seen.update(group)
    rest = [k for k in keys if k not in seen]
    picks = rng.choice(len(rest), size=max(0, min(n, len(keys)) - len(chosen)), replace=False)
    chosen = chosen[:n] + [rest[i] for i in picks]
    specs = []
    for key in chosen:
        spec = shapes.sample_spec(rng, combo=key[:3])
        # The spec drew its own background; the key's is the one the caption names.
        specs.append(shapes.ShapeSpec(**{**spec.__dict__, "background": key[3]}))
    videos = torch.stack([shapes.render(s) for s in specs])
    return shapes.Batch(videos, [shapes.caption(s) for s in specs], specs)


def augment(videos: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild pixel noise and blur, so the model also reads imperfect (generated) videos."""
    b = len(videos)
    sigma = torch.rand(b, 1, 1, 1, 1, generator=gen) * 0.12
    noisy = videos + torch.randn(videos.shape, generator=gen) * sigma
    blur = F.avg_pool2d(noisy.flatten(0, 1), 3, 1, 1, count_include_pad=False).view_as(noisy)
    use_blur = (torch.rand(b, 1, 1, 1, 1, generator=gen) < 0.25).float()
    return (noisy * (1 - use_blur) + blur * use_blur).clamp(0, 1)


@torch.no_grad()
def retrieval(clip: ShapesClip, n_videos: int, seed: int) -> dict[str, float]:
    """Top-1 caption retrieval on held-out videos (see module docstring)."""
    clip.eval()
    keys = all_captions()
    text = clip.encode_text([_caption(k) for k in keys])
    index = {k: i for i, k in enumerate(keys)}
    batch = shapes.make_batch(n_videos, seed, "heldout")
    video = clip.encode_video(batch.videos.to(clip.device))
    sims = video @ text.T  # (N, 540)
    hits = {f"top1_{a}": [] for a in ("all",) + ATTRS}
    for row, spec in zip(sims, batch.specs, strict=True):
        key = (spec.colour, spec.shape, spec.direction, spec.background)
        true = index[key]
        hits["top1_all"].append(float(row.argmax().item() == true))
        for j, attr in enumerate(ATTRS):
            rivals = [index[key[:j] + (v,) + key[j + 1 :]] for v in _values(attr)]
            hits[f"top1_{attr}"].append(float(rivals[int(row[rivals].argmax())] == true))
    clip.train()
    return {k: round(float(np.mean(v)), 4) for k, v in hits.items()}


def _values(attr: str) -> tuple[str, ...]:
    return {
        "colour": tuple(shapes.COLOURS),
        "shape": shapes.SHAPES,
        "direction": shapes.DIRECTIONS,
        "background": shapes.BACKGROUNDS,
    }[attr]


def _caption(key: tuple[str, str, str, str]) -> str:
    colour, shape, direction, background = key
    return shapes.combo_prompt(colour, shape, direction, background)


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate, save; returns the report."""
    import open_clip

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    start = time.time()
    register_config(model_config())
    if args.init is not None:
        model = load_shapes_clip(args.init, device=str(device)).model
        print(f"initialised from {args.init}")
    else:
        model = open_clip.create_model(MODEL_NAME, pretrained=None, device=device)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    clip = ShapesClip(model, tokenizer).train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{MODEL_NAME}: {n_params / 1e6:.2f}M parameters")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "logit_scale" in name or "embedding" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    losses: list[float] = []
    curve: list[dict] = []
    steps_done = 0
    bar = tqdm(range(args.steps), desc="shapes clip", mininterval=10)
    for step in bar:
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        progress = step / args.steps
        if args.time_limit:  # a time-limited run ends its schedule at the limit
            progress = max(progress, (time.time() - start) / (args.time_limit * 60))
        lr *= 0.55 + 0.45 * math.cos(math.pi * min(1.0, progress))  # cosine to 10%
        for g in opt.param_groups:
            g["lr"] = lr
        batch = distinct_batch(rng, args.batch_size, "train", args.direction_groups)
        video = clip.encode_video(augment(batch.videos, gen).to(device))
        text = clip.encode_text(batch.captions)
        logits = model.logit_scale.exp().clamp(max=100) * video @ text.T
        target = torch.arange(len(logits), device=device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        steps_done = step + 1
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", refresh=False)
        if steps_done % 250 == 0 or steps_done == args.steps:
            acc = retrieval(clip, 120, seed=10_000)
            curve.append({"step": steps_done, "loss": round(float(np.mean(losses[-50:])), 4), **acc})
            print(f"step {steps_done} {curve[-1]} elapsed {time.time() - start:.0f}s", flush=True)
            save_shapes_clip(model, args.out, {"steps": steps_done})
        if args.time_limit and time.time() - start > args.time_limit * 60:
            print(f"time limit reached after {steps_done} steps")
            break
    seconds = time.time() - start
    final = retrieval(clip, args.eval_videos, seed=20_000)
    report = {
        "command": "python tools/testbed/train_shapes_clip.py " + " ".join(argv or sys.argv[1:]),
        "device": str(device),
        "threads": args.threads,
        "steps": steps_done,
        "batch_size": args.batch_size,
        "init": str(args.init) if args.init else None,
        "train_seconds": round(seconds, 1),
        "parameters": n_params,
        "heldout_videos": args.eval_videos,
        "distractors_all": len(all_captions()) - 1,
        **final,
        "curve": curve,
    }
    save_shapes_clip(model, args.out, {k: v for k, v in report.items() if k != "curve"})
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    report["weights_mb"] = round(size / 1e6, 2)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=1))
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
