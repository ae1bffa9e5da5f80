"""At which noise level does the tiny-shapes model settle each attribute of a video?

SDEdit as a probe: real held-out testbed videos are noised to timestep t and denoised back
by the model (diffusers' ``VideoToVideoSDPipeline`` on the same folder, ``strength``
choosing t) under a *conflicting* caption: every attribute (colour, shape, direction)
changed to another value. The analytic scorer then measures the result. Per attribute,
``kept`` is the share that still shows the real video's value (the noisy video had decided
it) and ``follows`` the share that shows the conflicting caption's (still open at t, so the
prompt decided it). Where an attribute flips from kept to follows is where the sampling
chain decides it, and where a reward on it must reach. (With the video's own caption, as
``--caption own`` does, a model that follows prompts "keeps" everything from any t and the
probe cannot tell the noise's decision from the prompt's.)

    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/probe_decision_time.py --threads 2

writes ``benchmarks/tiny_shapes_decision_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rlr_video.testbed import scorer, shapes  # noqa: E402
from rlr_video.testbed.tiny_model import GUIDANCE_SCALE, TINY_SHAPES_DIR, load_pipeline  # noqa: E402
from rlr_video.testbed.word_swap import VALUES, retarget  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=TINY_SHAPES_DIR)
    p.add_argument("--videos", type=int, default=60, help="real held-out videos")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps of the full schedule")
    p.add_argument(
        "--kept-steps",
        default="25,23,20,18,15,13,8",
        help="comma-separated numbers of the schedule's last steps to run (25 of 25: from the top)",
    )
    p.add_argument("--guidance", type=float, default=GUIDANCE_SCALE)
    p.add_argument(
        "--caption",
        choices=("conflicting", "own"),
        default="conflicting",
        help="denoise under a caption with every attribute changed, or the video's own",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "tiny_shapes_decision_time.json")
    return p.parse_args(argv)


def conflicting(caption: str) -> str:
    """``caption`` with colour, shape and direction each moved to the next value of its list."""
    parsed = scorer.parse_prompt(caption)
    target = {a: VALUES[a][(VALUES[a].index(getattr(parsed, a)) + 1) % len(VALUES[a])] for a in VALUES}
    return retarget(caption, target)


def share(measured: list, prompts: list, attribute: str) -> float:
    """How many measured videos show the ``attribute`` value their entry of ``prompts`` names."""
    return round(
        sum(getattr(m, attribute) == getattr(p, attribute) for m, p in zip(measured, prompts, strict=True))
        / len(measured),
        4,
    )


def main(argv: list[str] | None = None) -> dict:
    """Noise, denoise and score at every level; write and return the report."""
    from diffusers import VideoToVideoSDPipeline

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    pipe = VideoToVideoSDPipeline(**load_pipeline(args.model).components)
    pipe.set_progress_bar_config(disable=True)
    real = shapes.make_batch(args.videos, args.seed, "heldout")
    report: dict = {
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "videos": args.videos,
        "guidance_scale": args.guidance,
        "command": "python tools/testbed/probe_decision_time.py " + " ".join(argv or sys.argv[1:]),
        "levels": [],
    }
    captions = [conflicting(c) for c in real.captions] if args.caption == "conflicting" else real.captions
    truth = [scorer.parse_prompt(c) for c in real.captions]
    asked = [scorer.parse_prompt(c) for c in captions]
    report["caption"] = args.caption
    pipe.scheduler.set_timesteps(args.steps)
    schedule = pipe.scheduler.timesteps.tolist()
    for kept in tqdm([int(k) for k in args.kept_steps.split(",")], desc="noise levels"):
        if not 0 < kept <= args.steps:
            raise ValueError(f"--kept-steps {kept}: must be in 1..{args.steps}")
        # One video per call: the pipeline's noising step only broadcasts over a batch of one.
        frames = torch.cat(
            [
                pipe(
                    prompt=caption,
                    video=video[None],
                    strength=kept / args.steps,
                    num_inference_steps=args.steps,
                    guidance_scale=args.guidance,
                    generator=torch.Generator().manual_seed(args.seed + i),
                    output_type="pt",
                ).frames.float()
                for i, (caption, video) in enumerate(zip(captions, real.videos, strict=True))
            ]
        )
        measured = [scorer.measure(video) for video in frames]
        level = {"start_timestep": schedule[args.steps - kept], "steps_run": kept}
        for a in scorer.ATTRIBUTES:
            level[f"{a}_kept"] = share(measured, truth, a)
            level[f"{a}_follows"] = share(measured, asked, a)
        level["valid"] = round(float(scorer.score_batch(frames, captions)["valid"].mean()), 4)
        report["levels"].append(level)
        print(level, flush=True)
    return write_report(report, args.out, start)


def write_report(report: dict, out: Path, start: float) -> dict:
    """Add the elapsed seconds since ``start``, write ``report`` as JSON to ``out`` and return it."""
    report["seconds"] = round(time.time() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out} in {report['seconds']:.0f}s")
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
