"""Pretrain the tiny-shapes text-to-video model on procedurally generated moving shapes.

The model works in pixel space; the pipeline layout's ``AutoencoderKL`` is built to be
the identity (``rlr_video.testbed.tiny_model.build_identity_vae``; its error is checked
and logged). The UNet (``--unet``: ``UNet3DConditionModel`` or ``UNetMotionModel``) and the
``CLIPTextModel`` are trained jointly with the MSE objective on the DDPM forward process,
predicting the noise or, with ``--prediction-type v_prediction`` (the shipped model), the
velocity, whose loss weighs x0 errors at high noise where epsilon's barely counts them: only
v-prediction taught the model the direction word (docs/testbed-direction.md).
``--t-focus`` and ``--x0-weight-cap`` put the steps and the loss where the motion is
decided (t ~ 480-760, measured by ``tools/testbed/probe_decision_time.py``).
The caption is dropped (replaced by "") with probability ``--cfg-dropout`` so
classifier-free guidance works. Data are drawn fresh every step from the *training*
combinations only; held-out colour x shape x direction combinations are never seen. An
EMA of the weights is what gets saved.

The output folder is a ``TextToVideoSDPipeline`` or ``AnimateDiffPipeline`` (safetensors)
plus ``train_info.json`` with the command, the run time and the loss curve.

    HF_HUB_OFFLINE=1 .venv/bin/python tools/testbed/pretrain_tiny_shapes.py --steps 2000 \
        --threads 1 --out rlr_video/assets/tiny-shapes

The shipped weights took six runs, each from the last one's output (``--init``): two with
epsilon, four with v-prediction, four of them on a GPU; the chain of commands is in
``rlr_video/assets/tiny-shapes/train_info.json`` and docs/testbed-direction.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlr_video.testbed import shapes  # noqa: E402
from rlr_video.testbed.tiny_model import (  # noqa: E402
    NUM_FRAMES,
    RESOLUTION,
    TINY_SHAPES_DIR,
    UNET_KINDS,
    build_components,
    denoise,
    encode_prompts,
    make_pipeline,
    training_target,
    video_to_latents,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000, help="UNet optimisation steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.998, help="EMA decay of saved weights")
    p.add_argument("--cfg-dropout", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0, help="data-generating processes")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the UNet pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None, help="start from a saved folder's UNet and text encoder")
    p.add_argument(
        "--unet",
        choices=UNET_KINDS,
        default="unet3d",
        help="denoiser class: unet3d (UNet3DConditionModel, the shipped model) or motion (UNetMotionModel)",
    )
    p.add_argument(
        "--prediction-type",
        choices=("epsilon", "v_prediction"),
        default="epsilon",
        help="what the UNet predicts; v_prediction weights x0 errors at high noise, where the motion is decided",
    )
    p.add_argument(
        "--t-focus",
        type=int,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="draw --t-focus-frac of the timesteps from [LO, HI) instead of [0, 1000): where the motion is decided",
    )
    p.add_argument("--t-focus-frac", type=float, default=0.7)
    p.add_argument(
        "--x0-weight-cap",
        type=float,
        default=0.0,
        help="weigh each video's loss by 1/SNR(t) clipped to [1, CAP] (0: unweighted); for epsilon this is "
        "the x0 error wherever 1 < 1/SNR < CAP",
    )
    p.add_argument("--out", type=Path, default=TINY_SHAPES_DIR, help="default: the shipped model (replaced)")
    p.add_argument("--save-every", type=int, default=250, help="also save mid-run (0: off)")
    p.add_argument(
        "--time-limit",
        type=float,
        default=0.0,
        help="stop after this many minutes, with the LR schedule ending there (0: off)",
    )
    return p.parse_args(argv)


@torch.no_grad()
def identity_error(vae, device: torch.device, seed: int = 123) -> float:
    """Max abs error of decode(x) vs x on fresh testbed frames (in [0, 1] units)."""
    batch = shapes.make_batch(16, seed, "heldout", resolution=RESOLUTION)
    x = (batch.videos.flatten(0, 1) * 2 - 1).to(device)
    return float((vae.decode(x).sample.clamp(-1, 1) - x).abs().max().item() / 2)


class _Batches(torch.utils.data.IterableDataset):
    """Endless training batches; each DataLoader worker draws from its own seed."""

    def __init__(self, batch_size: int, seed: int) -> None:
        self.batch_size, self.seed = batch_size, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            batch = shapes.make_batch(self.batch_size, rng, "train", NUM_FRAMES, RESOLUTION)
            yield batch.videos, batch.captions


def lr_at(step: int, total: int, warmup: int, peak: float, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak.

    ``time_progress`` (elapsed / time limit) lets a time-limited run finish its schedule
    at the limit: progress is whichever of steps and time is further along.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_progress)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def sample_timesteps(n: int, num_train: int, focus: tuple[int, int] | None, frac: float, gen) -> torch.Tensor:
    """Uniform training timesteps, or with ``focus`` a share ``frac`` of them drawn from [lo, hi)."""
    t = torch.randint(0, num_train, (n,), generator=gen)
    if focus is None:
        return t
    lo, hi = focus
    if not 0 <= lo < hi <= num_train:
        raise ValueError(f"--t-focus {lo} {hi}: need 0 <= LO < HI <= {num_train}")
    focused = torch.randint(lo, hi, (n,), generator=gen)
    return torch.where(torch.rand(n, generator=gen) < frac, focused, t)


def x0_weights(alpha_bar: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-video loss weights 1/SNR clipped to [1, cap] (all ones for cap 0).

    The epsilon loss is SNR times the x0 loss, so it barely sees how well the clean video
    is predicted at high noise, where the motion is decided; this weight makes it the x0
    loss there, up to ``cap``, and leaves the low-noise steps as they were.
    """
    if cap <= 0:
        return torch.ones_like(alpha_bar)
    return ((1 - alpha_bar) / alpha_bar).clamp(1.0, cap)


def _time_progress(args: argparse.Namespace, start: float) -> float:
    return (time.time() - start) / (args.time_limit * 60) if args.time_limit > 0 else 0.0


def save_pipeline(components: dict, ema: dict, out: Path, info: dict) -> None:
    """Save the EMA weights as a pipeline folder (safetensors; see ``make_pipeline``)."""
    unet = copy.deepcopy(components["unet"]).cpu()
    text_encoder = copy.deepcopy(components["text_encoder"]).cpu()
    # EMA holds parameters only; buffers (position ids) come from the live modules.
    unet.load_state_dict(ema["unet"], strict=False)
    text_encoder.load_state_dict(ema["text_encoder"], strict=False)
    pipe = make_pipeline({**components, "unet": unet, "text_encoder": text_encoder, "vae": components["vae"].cpu()})
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    (out / "train_info.json").write_text(json.dumps(info, indent=1) + "\n")
    components["vae"].to(components["device"])


def main(argv: list[str] | None = None) -> dict:
    """Run both phases and save; returns the ``train_info`` dict."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True  # GPU runs only; no effect on the CPU
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # fixed batch shapes: time cuDNN's conv algorithms once
    device = torch.device(args.device)
    start = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    comps = build_components(out / "tokenizer", seed=args.seed, unet=args.unet, prediction_type=args.prediction_type)
    comps["device"] = device
    if args.init is not None:
        from transformers import CLIPTextModel

        comps["unet"] = type(comps["unet"]).from_pretrained(args.init, subfolder="unet")
        comps["text_encoder"] = CLIPTextModel.from_pretrained(args.init, subfolder="text_encoder")
        print(f"initialised from {args.init}")
    comps["vae"].to(device)
    vae_err = identity_error(comps["vae"], device)
    print(f"identity VAE: max |decode(x) - x| = {vae_err:.2e} on held-out frames")
    if vae_err > 1e-3:
        raise RuntimeError(f"the identity VAE is off by {vae_err}; is it run in float32?")

    unet, text_encoder, scheduler = comps["unet"], comps["text_encoder"], comps["scheduler"]
    tokenizer = comps["tokenizer"]
    unet.to(device).train()
    text_encoder.to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    n_params = sum(p.numel() for p in params)
    print(
        f"unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M params, "
        f"text encoder {sum(p.numel() for p in text_encoder.parameters()) / 1e6:.2f}M"
    )
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema = {
        name: {k: v.detach().clone() for k, v in module.named_parameters()}
        for name, module in (("unet", unet), ("text_encoder", text_encoder))
    }
    ema_pairs = [
        (ema[name][k], v)
        for name, module in (("unet", unet), ("text_encoder", text_encoder))
        for k, v in module.named_parameters()
    ]
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    losses: list[float] = []
    token_cache: dict = {}
    info: dict = {
        "command": "python tools/testbed/pretrain_tiny_shapes.py " + " ".join(argv or sys.argv[1:]),
        "device": str(device),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "vae_identity_max_abs_error": vae_err,
        "parameters": n_params,
        "init": str(args.init) if args.init else None,
    }
    if args.init is not None and (args.init / "train_info.json").exists():
        info["init_info"] = json.loads((args.init / "train_info.json").read_text())
    loader = iter(
        torch.utils.data.DataLoader(
            _Batches(args.batch_size, args.seed),
            batch_size=None,
            num_workers=args.workers,
            prefetch_factor=4 if args.workers else None,
        )
    )
    bar = tqdm(range(args.steps), desc=args.unet, mininterval=10)
    steps_done = 0
    data_wait = 0.0
    for step in bar:
        t_data = time.time()
        videos, batch_captions = next(loader)
        data_wait += time.time() - t_data
        captions = [
            "" if rng.random() < args.cfg_dropout else c for c in batch_captions
        ]  # classifier-free guidance: learn the unconditional model too
        x0 = video_to_latents(videos).to(device, non_blocking=True)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = sample_timesteps(len(x0), scheduler.config.num_train_timesteps, args.t_focus, args.t_focus_frac, gen)
        t = t.to(device)
        a = alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.warmup, args.lr, _time_progress(args, start))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            emb = encode_prompts(tokenizer, text_encoder, captions, token_cache)
            pred = denoise(unet, xt, t, emb)
        per_video = (pred.float() - training_target(scheduler, x0, noise, t)).pow(2).flatten(1).mean(1)
        w = x0_weights(a.flatten(), args.x0_weight_cap)
        loss = (w * per_video).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        # EMA with a warm-up so early (random) weights fade out quickly.
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_([e for e, _ in ema_pairs], [v for _, v in ema_pairs], 1 - decay)
        losses.append(loss.item())
        steps_done = step + 1
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
        if steps_done % 50 == 0:
            print(
                f"step {steps_done} loss(avg50) {np.mean(losses[-50:]):.4f} "
                f"elapsed {time.time() - start:.0f}s (waiting for data {data_wait:.0f}s)",
                flush=True,
            )
        over_time = args.time_limit > 0 and time.time() - start > args.time_limit * 60
        last = steps_done == args.steps or over_time
        if last or (args.save_every and steps_done % args.save_every == 0):
            info.update(
                steps=steps_done,
                seconds=round(time.time() - start, 1),
                loss_curve=[round(float(np.mean(losses[i : i + 50])), 5) for i in range(0, len(losses), 50)],
            )
            save_pipeline(comps, ema, out, info)
        if over_time:
            print(f"time limit reached after {steps_done} steps")
            break
    info["seconds"] = round(time.time() - start, 1)
    (out / "train_info.json").write_text(json.dumps(info, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"saved {out} ({size / 1e6:.1f} MB) after {steps_done} steps in {info['seconds']:.0f}s")
    return info


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
