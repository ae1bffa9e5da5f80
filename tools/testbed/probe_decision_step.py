"""At which step of the training chain does a testbed model settle each attribute?

The companion of ``probe_decision_time.py`` on the chain the presets train (``--steps`` DDIM
steps at eta 1 for ``tiny-shapes``, as ``tiny-shapes-direction``; the flow-matching SDE at
noise level ``--eta`` for ``--model tiny-shapes-wan``): every video starts from its own noise under
caption A, and after the first k steps the caption is switched to B, which changes colour,
shape and direction. The analytic scorer then measures the result. Per attribute, ``first``
is the share that shows A's value (the first k steps had decided it) and ``second`` the share
that shows B's (it was still open after step k). Where ``first`` passes one half is the step
by which the chain has decided that attribute; a reward on it must reach a step up to there.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/probe_decision_step.py --threads 2
    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/probe_decision_step.py --model tiny-shapes-wan --eta 0.7

write ``benchmarks/tiny_shapes_decision_step.json`` and ``benchmarks/tiny_shapes_wan_decision_step.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools" / "testbed"))

from probe_decision_time import conflicting, share, write_report  # noqa: E402

from rlr_video.backbones import load_backbone  # noqa: E402
from rlr_video.chain import chain_step, draw_noise  # noqa: E402
from rlr_video.testbed import scorer, shapes  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-shapes", help="tiny-shapes, tiny-shapes-wan or a saved folder of either")
    p.add_argument("--videos", type=int, default=60, help="one per held-out prompt, cycled")
    p.add_argument("--steps", type=int, default=10, help="steps of the chain (the presets' 10)")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta, or the flow SDE's noise level")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/<model>_decision_step.json")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "benchmarks" / f"{Path(args.model).name.replace('-', '_')}_decision_step.json"
    return args


@torch.no_grad()
def sample_with_switch(backbone, first, second, batch: int, switch_after: int, seed: int) -> torch.Tensor:
    """The chain from one seed, conditioned on ``first`` for its first ``switch_after`` steps."""
    generator = torch.Generator().manual_seed(seed)
    x = backbone.initial_latents(batch, generator)
    T = backbone.num_steps
    for step in range(T, 0, -1):
        cond = first if T - step < switch_after else second
        x, _, _ = chain_step(backbone, cond, x, step, draw_noise(x, generator))
    return backbone.decode(x)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    backbone = load_backbone(args.model, num_steps=args.steps, eta=args.eta, lora_rank=0)
    held_out = shapes.heldout_prompts()
    captions = [held_out[i % len(held_out)] for i in range(args.videos)]
    others = [conflicting(c) for c in captions]
    first, second = backbone.encode(captions), backbone.encode(others)
    asked_first = [scorer.parse_prompt(c) for c in captions]
    asked_second = [scorer.parse_prompt(c) for c in others]
    report: dict = {
        "model": args.model,
        "transition": type(backbone.transition).__name__,
        "videos": args.videos,
        "steps": args.steps,
        "eta": args.eta,
        "guidance_scale": backbone.guidance_scale,
        "timesteps": [int(backbone.transition.timestep(s)) for s in range(args.steps, 0, -1)],
        "command": "python tools/testbed/probe_decision_step.py " + " ".join(argv or sys.argv[1:]),
        "switches": [],
    }
    sigmas = getattr(backbone.transition, "sigmas", None)  # the flow chain's noise levels, visited in order
    if sigmas is not None:
        report["sigmas"] = [round(float(x), 4) for x in sigmas[: args.steps]]
    for k in tqdm(range(args.steps + 1), desc="switch after step"):
        frames = sample_with_switch(backbone, first, second, args.videos, k, args.seed)
        measured = [scorer.measure(video) for video in frames]
        row = {"switch_after_steps": k}
        for a in scorer.ATTRIBUTES:
            row[f"{a}_first"] = share(measured, asked_first, a)
            row[f"{a}_second"] = share(measured, asked_second, a)
        report["switches"].append(row)
        print(row, flush=True)
    return write_report(report, args.out, start)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
