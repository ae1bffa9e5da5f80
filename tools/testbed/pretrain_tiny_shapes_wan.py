"""Pretrain tiny-shapes-wan: a Wan 2.1 ``WanPipeline`` on procedurally generated moving shapes.

Two phases, as Wan's own models were made: the VAE first, then the transformer on its latents.

``vae``: an ``AutoencoderKLWan`` (``rlr_video.testbed.tiny_wan.VAE_CONFIG``) learns to
reconstruct 9-frame 32 x 32 training videos through diffusers' own chunked causal
``encode`` / ``decode`` (the first frame alone, then chunks as long as the time compression),
with an L1 + L2 loss that weighs the object's pixels ``1 + --object-weight`` times (the object covers ~10%
of a frame, and its colour, shape and place are what the model must carry) and a small KL
term. On save the per-channel ``latents_mean`` / ``latents_std`` of training videos are
written into the VAE's config, where ``WanPipeline`` reads them.

``transformer``: the VAE's posterior means and stds of ``--cache-videos`` training videos
are computed once (``latents.pt`` in ``--out``); a ``WanTransformer3DModel`` and the text
encoder (initialised from tiny-shapes' shapes text encoder, ``--text-init``) then learn
rectified flow on normalised latents drawn from that posterior: x_s = (1 - s) x0 + s eps,
target v = eps - x0, with s and the timestep drawn as diffusers' flow-matching training
scripts do (an index into ``FlowMatchEulerDiscreteScheduler``'s shifted training sigmas,
uniform or logit-normal; Wan's shift ``FLOW_SHIFT``). The caption is dropped with
probability ``--cfg-dropout`` so that classifier-free guidance works. Every ``--eval-every``
steps the EMA weights sample held-out prompts through ``WanPipeline`` and the ground-truth
scorer grades them.

Data are drawn from the *training* colour x shape x direction combinations only. Runs are
resumable: rerun the same command and it continues from ``--out/checkpoint.pt``;
``--time-limit`` is the run's total, across resumes, and the learning rate's cosine ends there.
EMA weights are what gets saved; ``train_info.json`` records every command line.

    python tools/testbed/pretrain_tiny_shapes_wan.py vae --out /tmp/wan-vae --time-limit 60
    python tools/testbed/pretrain_tiny_shapes_wan.py transformer --vae /tmp/wan-vae --out /tmp/wan \\
        --time-limit 180
    # the model is /tmp/wan/pipeline; another run goes on from it with --init /tmp/wan/pipeline

The shipped weights took one VAE run and four transformer runs, each from the last (``--init``),
changing the timestep density (``--weighting``, ``--logit-mean``) between them: every command line
is in the folder's ``train_info.json``, what each run changed and measured in docs/testbed-wan.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlr_video.testbed import shapes  # noqa: E402
from rlr_video.testbed import tiny_wan as tw  # noqa: E402
from rlr_video.testbed.scorer import accuracy  # noqa: E402
from rlr_video.testbed.tiny_model import TINY_SHAPES_DIR  # noqa: E402

EVAL_KEYS = ("colour", "shape", "direction", "all")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("vae", "transformer"))
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, logs, the saved model)")
    p.add_argument("--steps", type=int, default=1_000_000, help="optimisation steps (the time limit ends most runs)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 8 (vae), 64 (transformer)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate; default: 1e-3 (vae), 5e-4 (transformer)")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda: the models, their updates and the VAE's encoding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=0.0, help="minutes in all, across resumes (0: off)")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint and save the model every N steps")
    p.add_argument("--eval-every", type=int, default=1000, help="grade held-out videos every N steps (0: off)")
    p.add_argument("--eval-videos", type=int, default=30, help="held-out videos per evaluation (2 per combination)")
    vae = p.add_argument_group("vae phase")
    vae.add_argument(
        "--vae-variant", choices=tuple(tw.VAE_VARIANTS), default=tw.VAE_VARIANT, help="see tiny_wan.VAE_VARIANTS"
    )
    vae.add_argument(
        "--edge-weight", type=float, default=0.0, help="weight of an L1 loss on horizontal and vertical differences"
    )
    vae.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the mean KL per latent element")
    vae.add_argument("--init-logvar", type=float, default=-6.0, help="initial posterior log-variance")
    vae.add_argument(
        "--posterior-noise",
        type=float,
        default=1.0,
        help="scale of the posterior's std in the latents decoded in training (0: the mean). The learnt "
        "log-variance moves by at most ~lr per Adam step, so a posterior std that blurs outlines lingers "
        "for thousands of steps; this shrinks it at once",
    )
    vae.add_argument("--object-weight", type=float, default=4.0, help="extra loss weight of object pixels")
    tr = p.add_argument_group("transformer phase")
    tr.add_argument("--vae", type=Path, help="the vae phase's --out (its vae/ folder is used)")
    tr.add_argument("--text-init", type=Path, default=TINY_SHAPES_DIR / "text_encoder", help="CLIPTextModel folder")
    tr.add_argument("--init", type=Path, default=None, help="start from a saved pipeline folder's transformer and text")
    tr.add_argument("--cache-videos", type=int, default=100_000, help="training videos encoded once into latents.pt")
    tr.add_argument("--cfg-dropout", type=float, default=0.1)
    tr.add_argument("--weighting", choices=("uniform", "logit_normal"), default="uniform", help="timestep density")
    tr.add_argument(
        "--logit-mean",
        type=float,
        default=0.0,
        help="logit_normal's mean (SD3's logit_mean): 1.0 draws 46%% of the steps at sigma >= 0.9 after the "
        "shift (uniform: 25%%), where the caption's mean video, and with it the direction word, is learnt",
    )
    tr.add_argument("--eval-steps", type=int, default=20, help="Euler steps of the evaluation samples")
    args = p.parse_args(argv)
    if args.phase == "transformer" and args.vae is None:
        p.error("the transformer phase needs --vae (the vae phase's --out)")
    args.batch_size = args.batch_size or (8 if args.phase == "vae" else 64)
    args.lr = args.lr or (1e-3 if args.phase == "vae" else 5e-4)
    return args


def lr_at(step: int, total: int, warmup: int, peak: float, time_progress: float) -> float:
    """Linear warm-up, then a cosine to 10% of the peak over steps or time, whichever is further."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), time_progress)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Run:
    """Optimiser, EMA, LR schedule, time limit and resumable checkpoint of one phase."""

    def __init__(self, args: argparse.Namespace, modules: dict[str, torch.nn.Module], info: dict) -> None:
        self.args, self.modules, self.info = args, modules, info
        self.params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=args.lr, weight_decay=0.01)
        self.ema = {n: {k: v.detach().clone() for k, v in m.named_parameters()} for n, m in modules.items()}
        self.pairs = [(self.ema[n][k], v) for n, m in modules.items() for k, v in m.named_parameters()]
        self.step, self.elapsed_before, self.losses = 0, 0.0, []
        self.start = time.time()
        self.ckpt = args.out / "checkpoint.pt"
        if self.ckpt.exists():
            state = torch.load(self.ckpt, map_location="cpu", weights_only=True)  # a run may change device
            for n, m in modules.items():
                m.load_state_dict(state["model"][n])
                for k, v in state["ema"][n].items():
                    self.ema[n][k].copy_(v)
            self.opt.load_state_dict(state["opt"])
            self.step, self.elapsed_before, self.losses = state["step"], state["elapsed"], state["losses"]
            self.info["commands"] = state["commands"]
            print(f"resumed from {self.ckpt} at step {self.step} ({self.elapsed_before / 60:.1f} min done)", flush=True)
        self.info.setdefault("commands", []).append(info["command"])

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.start

    def over_time(self) -> bool:
        return self.args.time_limit > 0 and self.elapsed > self.args.time_limit * 60

    def done(self) -> bool:
        return self.step >= self.args.steps or self.over_time()

    def update(self, loss: torch.Tensor) -> None:
        a = self.args
        progress = self.elapsed / (a.time_limit * 60) if a.time_limit > 0 else 0.0
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, a.steps, a.warmup, a.lr, progress)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        decay = min(a.ema, (1 + self.step) / (10 + self.step))  # early (random) weights fade out fast
        with torch.no_grad():
            torch._foreach_lerp_([e for e, _ in self.pairs], [v for _, v in self.pairs], 1 - decay)
        self.losses.append(float(loss.detach()))
        self.step += 1
        if self.step % 50 == 0:
            lr = self.opt.param_groups[0]["lr"]
            print(
                f"step {self.step} loss(avg50) {np.mean(self.losses[-50:]):.5f} lr {lr:.2e} "
                f"elapsed {self.elapsed / 60:.1f} min",
                flush=True,
            )

    def ema_copy(self, name: str) -> torch.nn.Module:
        """A copy of a module with the EMA weights (buffers from the live module)."""
        module = copy.deepcopy(self.modules[name])
        module.load_state_dict(self.ema[name], strict=False)
        return module.eval()

    def checkpoint(self) -> None:
        state = {
            "model": {n: m.state_dict() for n, m in self.modules.items()},
            "ema": self.ema,
            "opt": self.opt.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "losses": self.losses,
            "commands": self.info["commands"],
        }
        torch.save(state, self.ckpt.with_suffix(".tmp"))
        os.replace(self.ckpt.with_suffix(".tmp"), self.ckpt)  # a kill mid-write keeps the last one

    def record(self) -> dict:
        self.info.update(
            steps=self.step,
            minutes=round(self.elapsed / 60, 1),
            loss_curve=[round(float(np.mean(self.losses[i : i + 100])), 5) for i in range(0, len(self.losses), 100)],
        )
        return self.info


def object_weight(x: torch.Tensor, extra: float) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, F, H, W): 1 + extra x the chroma of the pixel or a neighbour
    (3 x 3), so the saturated object and the pixels just around it count more: a halo of colour
    around the object blurs its outline, and the scorer reads the shape from that outline."""
    rgb = (x + 1) / 2
    chroma = rgb.amax(1, keepdim=True) - rgb.amin(1, keepdim=True)
    return 1 + extra * torch.nn.functional.max_pool3d(chroma, (1, 3, 3), stride=1, padding=(0, 1, 1))


@torch.no_grad()
def measure_latent_stats(vae, seed: int, n: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior means of ``n`` training videos."""
    batch = shapes.make_batch(n, seed, "train", tw.NUM_FRAMES, tw.RESOLUTION)
    z = torch.cat([vae.encode(tw.video_to_pixels(v).to(vae.device)).latent_dist.mean for v in batch.videos.split(64)])
    return z.mean((0, 2, 3, 4)).tolist(), z.std((0, 2, 3, 4)).tolist()


@torch.no_grad()
def eval_vae(vae, n: int, seed: int = 1234) -> dict:
    """Reconstruct held-out videos (posterior mean) and grade them with the ground-truth scorer."""
    batch = shapes.make_batch(n, seed, "heldout", tw.NUM_FRAMES, tw.RESOLUTION)
    x = tw.video_to_pixels(batch.videos).to(vae.device)
    rec = tw.pixels_to_video(vae.decode(vae.encode(x).latent_dist.mean).sample).cpu()
    mse = float((rec - batch.videos).pow(2).mean())
    acc = accuracy(rec, batch.captions)
    return {"psnr": round(10 * math.log10(1 / mse), 2), **{k: round(acc[k], 4) for k in EVAL_KEYS}}


def save_vae(run: Run, out: Path) -> None:
    vae = run.ema_copy("vae")
    mean, std = measure_latent_stats(vae, run.args.seed + 99)
    vae.register_to_config(latents_mean=[round(m, 5) for m in mean], latents_std=[round(s, 5) for s in std])
    vae.save_pretrained(out / "vae", safe_serialization=True)
    (out / "train_info.json").write_text(json.dumps(run.record(), indent=1) + "\n")


def train_vae(args: argparse.Namespace, info: dict) -> None:
    torch.manual_seed(args.seed)
    vae = tw.build_vae(args.vae_variant).to(args.device).train()
    with torch.no_grad():  # the posterior's log-variance channels (the second half) start small:
        # at the prior's std 1 the noise drowns the latents' signal and the decoder learns nothing
        # for hundreds of steps (measured: PSNR 14 after 250 steps)
        vae.quant_conv.bias[vae.config.z_dim :] = args.init_logvar
    info["parameters"] = sum(p.numel() for p in vae.parameters())
    run = Run(args, {"vae": vae}, info)
    rng = np.random.default_rng([args.seed, run.step])
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + run.step)
    while not run.done():
        videos = shapes.make_batch(args.batch_size, rng, "train", tw.NUM_FRAMES, tw.RESOLUTION).videos
        x = tw.video_to_pixels(videos).to(args.device)
        post = vae.encode(x).latent_dist
        # the noise is drawn on the CPU, so a run draws the same on any device
        z = post.mean + args.posterior_noise * post.std * torch.randn(post.mean.shape, generator=gen).to(x.device)
        y = vae.decode(z).sample
        w = object_weight(x, args.object_weight)
        err = (y - x).abs() + (y - x).pow(2)
        rec = (w * err).mean() / w.mean()
        if args.edge_weight:  # blur shows as differences too small across the object's outline
            for dim in (3, 4):
                dy, dx = y.diff(dim=dim), x.diff(dim=dim)
                wd = w.narrow(dim, 1, w.shape[dim] - 1)
                rec = rec + args.edge_weight * (wd * (dy - dx).abs()).mean() / wd.mean()
        kl = 0.5 * (post.mean.pow(2) + post.var - 1 - post.logvar).mean()
        run.update(rec + args.kl_weight * kl)
        last = run.done()
        if args.eval_every and (run.step % args.eval_every == 0 or last):
            ev = eval_vae(run.ema_copy("vae"), args.eval_videos)
            print(f"eval step {run.step}: held-out reconstructions {ev}", flush=True)
            info.setdefault("evals", []).append({"step": run.step, **ev})
        if run.step % args.save_every == 0 or last:
            run.checkpoint()
            save_vae(run, args.out)
    print(f"saved {args.out / 'vae'} after {run.step} steps, {run.elapsed / 60:.1f} min", flush=True)


@torch.no_grad()
def build_latent_cache(vae, n: int, seed: int, path: Path) -> dict:
    """Posterior means and stds (float16, normalised like the transformer's input) of ``n``
    training videos and their captions; written once to ``path`` and reused."""
    if path.exists():
        cache = torch.load(path, weights_only=True)
        if len(cache["captions"]) >= n:
            return cache
    rng = np.random.default_rng([seed, 7])
    means, stds, captions = [], [], []
    _, std_c = tw.latent_stats(vae)
    t0 = time.time()
    for start in range(0, n, 64):
        batch = shapes.make_batch(min(64, n - start), rng, "train", tw.NUM_FRAMES, tw.RESOLUTION)
        post = vae.encode(tw.video_to_pixels(batch.videos).to(vae.device)).latent_dist
        means.append(tw.normalise(vae, post.mean).half().cpu())
        stds.append((post.std / std_c.to(post.std)).half().cpu())
        captions += batch.captions
        if (start // 64) % 100 == 0:
            print(f"latent cache: {start + len(batch.captions)}/{n} videos, {time.time() - t0:.0f}s", flush=True)
    cache = {"mean": torch.cat(means), "std": torch.cat(stds), "captions": captions}
    torch.save(cache, path)
    return cache


def load_components(args: argparse.Namespace) -> dict:
    """The trained VAE, tiny-shapes' tokenizer, and the transformer and text encoder to train."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPTextModel

    vae = AutoencoderKLWan.from_pretrained(args.vae / "vae").eval().requires_grad_(False)
    comps = tw.build_components(args.out / "tokenizer", text_encoder=args.text_init, seed=args.seed)
    torch.manual_seed(args.seed)
    comps["vae"], comps["transformer"] = vae, tw.build_transformer(dict(vae.config))
    if args.init is not None:
        comps["transformer"] = WanTransformer3DModel.from_pretrained(args.init, subfolder="transformer")
        comps["text_encoder"] = CLIPTextModel.from_pretrained(args.init, subfolder="text_encoder")
    for name in ("vae", "transformer", "text_encoder"):
        comps[name].to(args.device)
    comps["transformer"].train()
    comps["text_encoder"].train()
    return comps


def ema_pipeline(run: Run, comps: dict):
    """A ``WanPipeline`` of the components with the EMA transformer and text encoder."""
    return tw.make_pipeline(
        {**comps, "transformer": run.ema_copy("transformer"), "text_encoder": run.ema_copy("text_encoder")}
    )


def eval_transformer(run: Run, comps: dict, n: int, steps: int, seed: int = 4321) -> dict:
    """Sample ``n`` held-out prompts with the EMA weights through ``WanPipeline`` and grade them."""
    pipe = ema_pipeline(run, comps)
    pipe.set_progress_bar_config(disable=True)
    prompts = shapes.combo_prompts(shapes.combos_for("heldout"), max(1, n // 15))
    videos = tw.sample(pipe, prompts, num_inference_steps=steps, seed=seed)
    acc = accuracy(videos, prompts)
    return {k: round(acc[k], 4) for k in ("valid", *EVAL_KEYS)}


@torch.no_grad()
def caption_gain(run: Run, comps: dict, cache: dict, n: int = 64, sigmas: tuple[float, ...] = (0.9, 0.6)) -> dict:
    """How much the EMA model uses each caption word: the flow-matching loss with one word of the
    true caption swapped (``word_swap.swapped_prompts``) minus the loss with it, on the same
    cached latents, noise and sigmas. ``direction`` swaps a moving caption's direction for
    another (``still`` kept out: telling moving from still is ``motion``, a still caption made
    moving). About 0: the word is ignored. Run 2 at 144k videos gave, at sigma 0.9, colour +0.60,
    shape +0.05, motion large, direction about 0: its objects move, in no particular direction."""
    from rlr_video.testbed.word_swap import swapped_prompts

    transformer, text_encoder = run.ema_copy("transformer"), run.ema_copy("text_encoder")
    gen, rng = torch.Generator().manual_seed(99), np.random.default_rng(99)
    idx = torch.linspace(0, len(cache["captions"]) - 1, n).long()
    device = transformer.device
    x0, captions = cache["mean"][idx].float().to(device), [cache["captions"][i] for i in idx.tolist()]
    eps = torch.randn(x0.shape, generator=gen).to(device)
    still = torch.tensor(["standing still" in c for c in captions])
    swaps = {"colour": ("colour", slice(None)), "shape": ("shape", slice(None))}
    swaps |= {"direction": ("direction", ~still), "motion": ("direction", still)}
    sched_sigmas = comps["scheduler"].sigmas[:-1].float()

    def swapped(caption: str, attribute: str) -> str:
        """Another caption with ``attribute`` changed (a direction swap stays moving)."""
        others = [q for q in swapped_prompts(caption, attribute) if q != caption]
        return rng.choice([q for q in others if not (attribute == "direction" and "still" in q)])

    def loss(prompts: list[str], xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = tw.encode_prompts(comps["tokenizer"], text_encoder, prompts)
        pred = transformer(hidden_states=xt, timestep=t, encoder_hidden_states=emb).sample
        return (pred - (eps - x0)).pow(2).mean((1, 2, 3, 4))

    gains: dict = {}
    for sigma in sigmas:
        k = int((sched_sigmas - sigma).abs().argmin())
        s, t = sched_sigmas[k], comps["scheduler"].timesteps[k].float().expand(n).to(device)
        xt = (1 - s) * x0 + s * eps
        base = loss(captions, xt, t)
        for name, (attribute, rows) in swaps.items():
            diff = (loss([swapped(c, attribute) for c in captions], xt, t) - base)[rows]
            if diff.numel():  # no still captions among the n: no motion gain
                gains[f"{name}@{float(s):.2f}"] = round(float(diff.mean()), 5)
    return gains


def save_transformer(run: Run, comps: dict, out: Path) -> None:
    ema_pipeline(run, comps).save_pretrained(str(out), safe_serialization=True)
    (out / "train_info.json").write_text(json.dumps(run.record(), indent=1) + "\n")


def train_transformer(args: argparse.Namespace, info: dict) -> None:
    comps = load_components(args)
    vae_info = args.vae / "train_info.json"
    info["vae_info"] = json.loads(vae_info.read_text()) if vae_info.exists() else None
    if args.init is not None and (args.init / "train_info.json").exists():
        info["init_info"] = json.loads((args.init / "train_info.json").read_text())
    cache = build_latent_cache(comps["vae"], args.cache_videos, args.seed, args.out / "latents.pt")
    mean, std, captions = cache["mean"], cache["std"], cache["captions"]
    n = len(captions)
    print(f"latent cache: {n} videos, latents {tuple(mean.shape[1:])}, posterior std {std.float().mean():.4f}")
    transformer, text_encoder, tokenizer = comps["transformer"], comps["text_encoder"], comps["tokenizer"]
    info["parameters"] = {
        "transformer": sum(p.numel() for p in transformer.parameters()),
        "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
    }
    run = Run(args, {"transformer": transformer, "text_encoder": text_encoder}, info)
    sched = comps["scheduler"]
    # shifted, 1000 of each
    train_sigmas, train_timesteps = sched.sigmas[:-1].float().to(args.device), sched.timesteps.float().to(args.device)
    rng = np.random.default_rng([args.seed, run.step])
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + run.step)
    token_cache: dict = {}
    pipeline_dir = args.out / "pipeline"
    while not run.done():
        idx = torch.from_numpy(rng.integers(0, n, args.batch_size))
        # every draw on the CPU, so a run draws the same on any device
        x0 = (mean[idx].float() + std[idx].float() * torch.randn(mean[idx].shape, generator=gen)).to(args.device)
        prompts = ["" if rng.random() < args.cfg_dropout else captions[i] for i in idx.tolist()]
        if args.weighting == "uniform":
            u = torch.rand(args.batch_size, generator=gen)
        else:  # SD3's logit-normal density (diffusers' compute_density_for_timestep_sampling)
            # u runs down the sigmas (u = 0: sigma 1), SD3's t up them: a positive mean is more noise
            u = 1 - torch.sigmoid(args.logit_mean + torch.randn(args.batch_size, generator=gen))
        k = (u * len(train_sigmas)).long().clamp_max(len(train_sigmas) - 1).to(args.device)
        sigma = train_sigmas[k].view(-1, 1, 1, 1, 1)
        eps = torch.randn(x0.shape, generator=gen).to(args.device)
        xt = (1 - sigma) * x0 + sigma * eps
        emb = tw.encode_prompts(tokenizer, text_encoder, prompts, token_cache)
        pred = transformer(hidden_states=xt, timestep=train_timesteps[k], encoder_hidden_states=emb).sample
        run.update((pred.float() - (eps - x0)).pow(2).mean())
        last = run.done()
        if args.eval_every and (run.step % args.eval_every == 0 or last):
            ev = eval_transformer(run, comps, args.eval_videos, args.eval_steps)
            ev["caption_gain"] = caption_gain(run, comps, cache)
            print(f"eval step {run.step}: held-out samples {ev}", flush=True)
            info.setdefault("evals", []).append({"step": run.step, **ev})
        if run.step % args.save_every == 0 or last:
            run.checkpoint()
            save_transformer(run, comps, pipeline_dir)
    size = sum(f.stat().st_size for f in pipeline_dir.rglob("*") if f.is_file())
    print(f"saved {pipeline_dir} ({size / 1e6:.1f} MB) after {run.step} steps, {run.elapsed / 60:.1f} min")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    info = {
        "command": "python tools/testbed/pretrain_tiny_shapes_wan.py " + " ".join(argv or sys.argv[1:]),
        "phase": args.phase,
        "threads": args.threads,
        "device": args.device,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "torch": torch.__version__,
    }
    if args.phase == "vae":
        train_vae(args, info)
    else:
        shutil.rmtree(args.out / "tokenizer", ignore_errors=True)
        train_transformer(args, info)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
