"""How fast does a fresh tiny-shapes denoiser learn to let one caption word change its output?

At t in [900, 1000) the noisy input says almost nothing, so the best prediction is the mean
video *given the caption*: learning it is a pure caption -> video regression. This trains a
fresh UNet (``--unet``, v-prediction, so the target at high noise is the clean video itself)
on that regression, with one red circle on black where only one thing varies (``--vary``):

* ``direction``: the five motion captions. Their mean videos differ only in which way the
  mean moves over the frames: the caption must interact with the frame index.
* ``colour``: six colours, standing still. Their mean videos differ in a frame-independent way.
* ``none``: one caption ("moving left"): the control for frame-dependence without the text.

Every ``--every`` steps it predicts x0 at t = 999 from one fixed noise for every caption and
prints how far apart the captions' predictions are (``spread``: mean pairwise RMS, [0, 1]
pixel units) and each caption's centroid path (first -> last frame, pixels), next to the
same numbers for the data's mean videos (the regression's optimum). Writes the curve to
``--out`` (JSON) at every check.

    python tools/testbed/probe_caption_binding.py --vary direction --unet motion --minutes 20
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rlr_video.testbed import shapes  # noqa: E402
from rlr_video.testbed import tiny_model as tm  # noqa: E402

COMBOS: dict[str, list[shapes.Combo]] = {
    "direction": [("red", "circle", d) for d in shapes.DIRECTIONS],
    "colour": [(c, "circle", "still") for c in shapes.COLOURS],
    "none": [("red", "circle", "left")],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vary", choices=tuple(COMBOS), default="direction")
    p.add_argument("--unet", choices=tm.UNET_KINDS, default="motion")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=50, help="steps between checks")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=None, help="JSON (default: benchmarks/caption_binding_<vary>_<unet>.json)"
    )
    return p.parse_args(argv)


def render_batch(combos: list[shapes.Combo], rng: np.random.Generator, n: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` videos of random ``combos`` on black, as latents, with their captions."""
    specs = [
        dataclasses.replace(shapes.sample_spec(rng, combo=combos[int(rng.integers(len(combos)))]), background="black")
        for _ in range(n)
    ]
    videos = torch.stack([shapes.render(s, tm.NUM_FRAMES, tm.RESOLUTION) for s in specs])
    return tm.video_to_latents(videos), [shapes.caption(s) for s in specs]


def summarise(videos: torch.Tensor) -> dict:
    """Spread between the captions' videos (B, F, 3, H, W in [0, 1]) and their centroid paths."""
    pairs = list(itertools.combinations(range(len(videos)), 2))
    spread = float(np.mean([(videos[i] - videos[j]).pow(2).mean().sqrt().item() for i, j in pairs])) if pairs else 0.0
    weight = videos.amax(2) - videos.amin(2)  # chroma: the shape is saturated, the background black
    weight = weight / weight.sum((2, 3), keepdim=True).clamp_min(1e-6)
    axis = torch.arange(tm.RESOLUTION, dtype=videos.dtype) + 0.5
    cx, cy = (weight * axis).sum((2, 3)), (weight * axis[:, None]).sum((2, 3))
    paths = [[[round(float(c[i, f]), 1) for c in (cx, cy)] for f in (0, -1)] for i in range(len(videos))]
    return {"spread": round(spread, 4), "paths": paths}


def main(argv: list[str] | None = None) -> dict:
    """Train, checking every ``--every`` steps; returns (and writes) the curve."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    combos = COMBOS[args.vary]
    out = args.out or ROOT / "benchmarks" / f"caption_binding_{args.vary}_{args.unet}.json"
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        comps = tm.build_components(tokenizer_dir, seed=args.seed, unet=args.unet, prediction_type="v_prediction")
    unet, text_encoder, tokenizer, scheduler = (comps[k] for k in ("unet", "text_encoder", "tokenizer", "scheduler"))
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)

    captions = [shapes.combo_prompt(*combo, "black") for combo in combos]
    means = torch.stack(
        [tm.latents_to_video(render_batch([combo], np.random.default_rng(1), 500)[0]).mean(0) for combo in combos]
    )
    probe_noise = torch.randn((1, 3, tm.NUM_FRAMES, tm.RESOLUTION, tm.RESOLUTION), generator=gen)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "captions": captions, "optimum": summarise(means)}
    print(f"data's mean videos (the optimum): {report['optimum']}")
    report["checks"] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    start, step, cache = time.time(), 0, {}
    while time.time() - start < args.minutes * 60:
        x0, batch_captions = render_batch(combos, rng, args.batch_size)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(900, 1000, (len(x0),), generator=gen)
        text = tm.encode_prompts(tokenizer, text_encoder, batch_captions, cache)
        pred = tm.denoise(unet, scheduler.add_noise(x0, noise, t), t, text)
        loss = F.mse_loss(pred, tm.training_target(scheduler, x0, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % args.every == 0:
            with torch.no_grad():
                xt = probe_noise.expand(len(captions), -1, -1, -1, -1)
                t999 = torch.full((len(captions),), 999)
                v = tm.denoise(unet, xt, t999, tm.encode_prompts(tokenizer, text_encoder, captions))
                alpha = scheduler.alphas_cumprod[999]
                check = summarise(tm.latents_to_video(alpha.sqrt() * xt - (1 - alpha).sqrt() * v))
            check.update(step=step, seconds=round(time.time() - start), loss=round(loss.item(), 4))
            report["checks"].append(check)
            print(check, flush=True)
            out.write_text(json.dumps(report, indent=1) + "\n")  # a stopped run keeps its curve
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
