"""Evaluate a testbed model's prompt following with the analytic ground-truth scorer.

``--model`` is ``tiny-shapes`` (the default), ``tiny-shapes-wan`` or a saved folder of either.
With ``--sampler pipeline`` (the default) the folder is loaded with its diffusers pipeline's
``from_pretrained`` (the code path of hub models: ``TextToVideoSDPipeline`` with its saved
``DDIMScheduler``, or ``WanPipeline`` with its ``FlowMatchEulerDiscreteScheduler``, the Euler
ODE); with ``--sampler chain`` through ``load_backbone`` and ``rollout``, the chain that the
presets fine-tune (``--steps`` steps, ``--eta`` the DDIM eta or the flow SDE's noise level).
It samples every held-out colour x shape x direction combination on every background, and
scores the videos from pixels (``rlr_video.testbed.scorer``). Training combinations are
sampled too, for comparison: a model that only memorised its training captions scores well
on ``train`` and poorly on ``heldout``.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/eval_tiny_shapes.py --threads 2
    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/eval_tiny_shapes.py --model tiny-shapes-wan
    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/eval_tiny_shapes.py --model tiny-shapes-wan \
        --sampler chain --steps 10 --eta 0.7 --out benchmarks/tiny_shapes_wan_eval_chain.json

write ``benchmarks/<model>_eval.json`` (``tiny_shapes_eval.json``, ``tiny_shapes_wan_eval.json``; with
``--sheet``, a PNG of samples too).
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

from rlr_video.backbones.layout import PACKAGED_DEFAULTS, Layout, resolve_source  # noqa: E402
from rlr_video.testbed import scorer, shapes  # noqa: E402
from rlr_video.testbed import tiny_model as tm  # noqa: E402
from rlr_video.testbed import tiny_wan as tw  # noqa: E402

CHANCE = {"colour": 1 / len(shapes.COLOURS), "shape": 1 / len(shapes.SHAPES), "direction": 1 / len(shapes.DIRECTIONS)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-shapes", help="tiny-shapes, tiny-shapes-wan or a saved folder of either")
    p.add_argument(
        "--sampler",
        choices=("pipeline", "chain"),
        default="pipeline",
        help="the folder's diffusers pipeline, or load_backbone + rollout (the presets' chain)",
    )
    p.add_argument("--per-combo", type=int, default=6, help="videos per combination")
    p.add_argument("--train-combos", type=int, default=15, help="training combos to compare (0: none)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps")
    p.add_argument("--guidance", type=float, default=None, help="default: what load_backbone takes for the model")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta, or the flow SDE's noise level (chain only)")
    p.add_argument("--batch", type=int, default=90)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/<model>_eval.json")
    p.add_argument("--sheet", type=Path, default=None, help="also save a PNG of samples")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "benchmarks" / f"{Path(args.model).name.replace('-', '_')}_eval.json"
    return args


def training_summary(info: dict) -> dict:
    """The run that produced the weights, the runs it was initialised from (``--init``) and,
    for tiny-shapes-wan, the run that trained its VAE."""
    keys = ("command", "commands", "device", "threads", "steps", "seconds", "minutes", "batch_size", "parameters")
    summary = {k: info[k] for k in keys if k in info}
    if info.get("vae_info"):
        summary["vae"] = {k: info["vae_info"][k] for k in keys if k in info["vae_info"]}
    stages, inner = [], info.get("init_info")
    while inner:
        stages.append({k: inner[k] for k in keys if k in inner})
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


class Sampler:
    """Samples (B, F, 3, H, W) videos in [0, 1] from a testbed model, one way or the other."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args, self.wan = args, Layout(folder).pipeline_class == "WanPipeline"
        if args.sampler == "chain":
            from rlr_video.backbones import load_backbone

            options = {"num_steps": args.steps, "eta": args.eta, "lora_rank": 0, "device": args.device}
            self.backbone = load_backbone(folder, guidance_scale=args.guidance, **options)
            self.guidance, self.kind = self.backbone.guidance_scale, type(self.backbone.transition).__name__
            self.frames, self.resolution = self.backbone.num_frames, self.backbone.height
        else:
            if self.wan and args.eta:
                raise ValueError(f"--eta {args.eta}: WanPipeline's Euler sampler has none; use --sampler chain")
            module = tw if self.wan else tm
            self.pipe = module.load_pipeline(folder, device=args.device)
            self.guidance = args.guidance if args.guidance is not None else _packaged_guidance(folder)
            self.kind = type(self.pipe.scheduler).__name__
            self.frames, self.resolution = module.NUM_FRAMES, module.RESOLUTION

    @torch.no_grad()
    def __call__(self, prompts: list[str], seed: int) -> torch.Tensor:
        a = self.args
        if a.sampler == "chain":
            from rlr_video.chain import rollout

            b = self.backbone
            return b.decode(rollout(b, b.encode(prompts), torch.Generator().manual_seed(seed), len(prompts)).sample)
        if self.wan:
            return tw.sample(self.pipe, prompts, a.steps, self.guidance, seed=seed)
        return tm.sample(self.pipe, prompts, a.steps, self.guidance, seed=seed, eta=a.eta)


def _packaged_guidance(folder: Path) -> float:
    from rlr_video.backbones.layout import packaged_defaults

    return packaged_defaults(folder).get("guidance_scale", PACKAGED_DEFAULTS["tiny-shapes"]["guidance_scale"])


def main(argv: list[str] | None = None) -> dict:
    """Sample, score, write the report; returns it."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    folder = resolve_source(args.model)
    sampler = Sampler(args, folder)
    heldout = sorted(shapes.HELDOUT_COMBOS)
    rng = np.random.default_rng(args.seed)
    train_pick = rng.choice(len(shapes.TRAIN_COMBOS), args.train_combos, replace=False)
    train = [shapes.TRAIN_COMBOS[i] for i in sorted(train_pick)]
    report: dict = {
        "model": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder),
        "pipeline": Layout(folder).pipeline_class,
        "sampler": args.sampler,
        "scheduler" if args.sampler == "pipeline" else "transition": sampler.kind,
        "sampling": {"steps": args.steps, "guidance_scale": sampler.guidance, "eta": args.eta, "seed": args.seed},
        "chance": {k: round(v, 4) for k, v in CHANCE.items()},
        "command": "python tools/testbed/eval_tiny_shapes.py " + " ".join(argv or sys.argv[1:]),
    }
    info_path = folder / "train_info.json"
    if info_path.exists():
        report["training"] = training_summary(json.loads(info_path.read_text()))
    videos_by_split = {}
    for split, combos in (("heldout", heldout), ("train", train)):
        if not combos:  # --train-combos 0: held-out only
            continue
        prompts = shapes.combo_prompts(combos, args.per_combo)
        videos = torch.cat(
            [sampler(prompts[i : i + args.batch], seed=args.seed + i) for i in range(0, len(prompts), args.batch)]
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
    n_real = len(heldout) * args.per_combo
    real = shapes.make_batch(n_real, args.seed, "heldout", frames=sampler.frames, resolution=sampler.resolution)
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
