"""Memory benchmark: measured vs predicted peak of one RLR update, chunked or not.

For a tiny and a medium random-weight config of UNet3D (ModelScope) and UNetMotion
(AnimateDiff) at F in {8, 16, 32} frames: the peak memory one ``RLR.estimate`` call adds
(measured by ``rlr_video.memory.probe``: the CPU tensor tracker, or CUDA's allocator) next to
the cost model's prediction (``Planner.estimate(...).update``, uncalibrated), for
h in {1, 2, 4} under three settings: no checkpointing, per-call checkpointing, and per-call
checkpointing with frame chunks (units inside each call, the decoder and the reward in
chunks); plus each update's wall time, the backprop segment
(one call + decoder + reward, with backward) chunked vs unchunked at F = 16, the temporal
attention share (predicted for the active kernel and for materialised scores, and measured
peaks with PyTorch's math kernel forced), and an RSS cross-check of the tracker. Update times
on the CPU come from the tracked run (the tracker's own overhead is measured once per config
and reported); on a GPU from a separate untracked run.

    python tools/bench_memory.py                  # CPU, writes benchmarks/memory.json (and, for
                                                  # an --out elsewhere, memory_gpu_predicted.json:
                                                  # the SD-1.5-size prediction, also its
                                                  # sd15_animatediff_predicted key)
    python tools/bench_memory.py --quick          # the tiny configs only
    python tools/bench_memory.py --gpu --out DIR  # SD-1.5-size AnimateDiff, bf16, 256^2, 16 frames
    python tools/bench_memory.py --families ltx   # only these families' configs, their rows merged
                                                  # into the existing --out (the others' are kept)
    python tools/bench_memory.py --families wan22-ti2v wan22-a14b --no-rss   # Wan 2.2's rows
    python tools/bench_memory.py --families wan --no-rss   # the shipped tiny-shapes-wan (trained weights)

The transformer families' configs (``FAMILY_CONFIGS``: LTX-Video, Wan 2.2, HunyuanVideo 1.5 and
1.0) are real-class random-weight pipelines built by ``tests/backbone_fixtures.py`` and loaded with
``load_backbone``; their frame counts follow the family's rule (LTX-Video: 1 + 8k, Wan and
HunyuanVideo: 1 + 4k, so F in {9, 17, 33} stand for {8, 16, 32}). ``tiny-shapes-wan`` is the shipped
testbed with its trained weights, loaded by name.

Targets (reported, not enforced): median |prediction error| <= 15%; with per-call
checkpointing the peak grows <= 10% from h = 1 to h = 4; the chunked backprop segment at
F = 16 peaks at <= 40% of the unchunked one; the temporal attention share grows with F
when scores are materialised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rlr_video.memory.cost_model import CostModel  # noqa: E402
from rlr_video.memory.planner import Planner  # noqa: E402
from rlr_video.memory.probe import measure_peak, rss_peak_subprocess, time_it  # noqa: E402
from rlr_video.memory.recompute import MemoryOptions, apply_memory_options  # noqa: E402

STEPS = 5  # h = 4 needs T >= 5 (step 1 is FO)
BATCH = 2
PROMPTS = ["a red circle moving left", "a blue square moving up"]

CONFIGS = {
    # name: (family, block_out_channels, latent size, attention heads / motion heads, norm groups)
    "unet3d-tiny": ("modelscope", (16, 32), 8, 4, 8),
    "unet3d-medium": ("modelscope", (32, 64), 12, 4, 8),
    "unetmotion-tiny": ("animatediff", (16, 32), 8, 2, 8),
    "unetmotion-medium": ("animatediff", (32, 64), 12, 4, 8),
}
# Transformer families, loaded through load_backbone from a tiny pipeline of the real classes:
# name: (family, frame counts, height, width, changes to the test builder's transformer and VAE).
FAMILY_CONFIGS = {
    # tests/backbone_fixtures.py's tiny LTX-Video (0.9.5 layout) as it is
    "ltx-tiny": ("ltx", (9, 17, 33), 64, 64, {}, {}),
    # wider and deeper; the decoder's last stage has 16 float32 channels at half resolution per
    # pixel, as LTX-Video 0.9.5's has 128 bf16 channels at a quarter: its activations outweigh
    # the frames as they do at full size
    "ltx-medium": (
        "ltx",
        (9, 17, 33),
        64,
        64,
        {"num_layers": 2, "num_attention_heads": 4, "attention_head_dim": 16, "cross_attention_dim": 64},
        {"decoder_block_out_channels": (32, 64, 128), "decoder_layers_per_block": (2, 2, 2, 2)},
    ),
    # Wan 2.2 TI2V-5B's layout (expanded timesteps, the 2.2 VAE) at 128x128: 4 blocks of 4 heads of
    # 16; the VAE's decoder some times wider than its 12 output channels, as the published one's
    # 256 (at the builder's 6 the decode is mostly output frames, whose copies at the end of a
    # decode the cost model does not count: 15% low at 33 frames)
    "wan22-ti2v-small": (
        "wan22-ti2v",
        (9, 17, 33),
        128,
        128,
        {"num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 16, "ffn_dim": 128},
        {"base_dim": 8, "decoder_base_dim": 16, "dim_mult": [1, 2, 2, 2]},
    ),
    # Wan 2.2 A14B's layout: two experts of 4 blocks of 4 heads of 16 (5 steps at shift 12: 3 for the
    # high-noise expert, 2 for the low-noise one), the Wan 2.1 VAE of the builder
    "wan22-a14b-small": (
        "wan22-a14b",
        (9, 17, 33),
        64,
        64,
        {"num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 16, "ffn_dim": 128},
        {},
    ),
    # tests/backbone_fixtures.py's tiny HunyuanVideo 1.5 and 1.0 as they are
    "hunyuanvideo15-tiny": ("hunyuanvideo15", (9, 17, 33), 32, 32, {}, {}),
    "hunyuanvideo-tiny": ("hunyuanvideo", (9, 17, 33), 32, 32, {}, {}),
    # wider and deeper transformers, wider VAEs, a larger video
    "hunyuanvideo15-medium": (
        "hunyuanvideo15",
        (9, 17, 33),
        64,
        64,
        {"num_layers": 3, "num_attention_heads": 4, "attention_head_dim": 16, "rope_axes_dim": (4, 6, 6)},
        {"block_out_channels": (16, 16, 32, 32, 32)},
    ),
    "hunyuanvideo-medium": (
        "hunyuanvideo",
        (9, 17, 33),
        64,
        64,
        {
            "num_layers": 2,
            "num_single_layers": 2,
            "num_attention_heads": 4,
            "attention_head_dim": 16,
            "rope_axes_dim": (4, 6, 6),
        },
        {"block_out_channels": (16, 16, 32, 32)},
    ),
    # the shipped, trained tiny-shapes-wan (rlr_video/assets/tiny-shapes-wan) as it is: Wan 2.1's
    # classes, a VAE of 2x in space and time (1 + 2k frames)
    "tiny-shapes-wan": ("wan", (9, 17, 33), 32, 32, {}, {}),
}
# Each family's test builder (tests/backbone_fixtures.py) and its text length.
FAMILY_BUILDERS = {
    "ltx": ("tiny_ltx_pipeline", "T5_MAX_LENGTH"),
    "wan22-ti2v": ("tiny_wan22_ti2v_pipeline", "T5_MAX_LENGTH"),
    "wan22-a14b": ("tiny_wan22_a14b_pipeline", "T5_MAX_LENGTH"),
    "hunyuanvideo15": ("tiny_hunyuanvideo15_pipeline", "HUNYUAN_TEXT_LENGTH"),
    "hunyuanvideo": ("tiny_hunyuanvideo_pipeline", "HUNYUAN_TEXT_LENGTH"),
}
ALL_CONFIGS = [*CONFIGS, *FAMILY_CONFIGS]


def config_family(name: str) -> str:
    return CONFIGS[name][0] if name in CONFIGS else FAMILY_CONFIGS[name][0]


class Brightness:
    """A pixel reward (no weights): the memory under test is the denoiser's and decoder's."""

    name = "brightness"
    differentiable = True

    def __call__(self, frames: torch.Tensor, prompts) -> torch.Tensor:
        return frames.mean(dim=(1, 2, 3, 4))


# --------------------------------------------------------------------------- models


def _tiny_text(hidden: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=2,
        num_hidden_layers=1,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return tokenizer, CLIPTextModel(config).eval()


def build_denoiser(family: str, channels: tuple[int, ...], heads: int, groups: int, cross: int):
    from diffusers import MotionAdapter, UNet2DConditionModel, UNet3DConditionModel, UNetMotionModel

    n = len(channels)
    down = ("CrossAttnDownBlock3D",) * (n - 1) + ("DownBlock3D",)
    up = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (n - 1)
    shared = dict(
        block_out_channels=channels,
        layers_per_block=1,
        cross_attention_dim=cross,
        attention_head_dim=heads,
        norm_num_groups=groups,
    )
    if family == "modelscope":
        return UNet3DConditionModel(**shared, down_block_types=down, up_block_types=up)
    unet2d = UNet2DConditionModel(
        **shared,
        down_block_types=tuple(b.replace("3D", "2D") for b in down),
        up_block_types=tuple(b.replace("3D", "2D") for b in up),
    )
    adapter = MotionAdapter(
        block_out_channels=channels,
        motion_layers_per_block=1,
        motion_norm_num_groups=groups,
        motion_num_attention_heads=heads,
        motion_max_seq_length=64,
    )
    return UNetMotionModel.from_unet2d(unet2d, adapter)


class Model:
    """One config's modules, shared by the backbones built for each frame count."""

    def __init__(self, name: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
        from diffusers import AutoencoderKL, DDIMScheduler

        self.name = name
        family, channels, latent, heads, groups = CONFIGS[name]
        self.family, self.latent, self.dtype, self.device = family, latent, dtype, device
        torch.manual_seed(0)
        self.tokenizer, self.text = _tiny_text(32)
        self.unet = build_denoiser(family, channels, heads, groups, 32)
        self.vae = AutoencoderKL(
            block_out_channels=(8, 8),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
        ).eval()
        self.scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False)
        self._lora = False

    def backbone(self, frames: int):
        return make_backbone(self, frames)


class FamilyModel:
    """A ``FAMILY_CONFIGS`` entry: the test builder's tiny pipeline with the config's changes,
    saved once and loaded with ``load_backbone`` for each frame count."""

    def __init__(self, name: str, directory: Path):
        sys.path.insert(0, str(ROOT / "tests"))  # the tiny real-class builders live with the tests
        import backbone_fixtures
        import diffusers

        self.name = name
        self.family, self.frames, self.height, self.width, transformer, vae = FAMILY_CONFIGS[name]
        if name == "tiny-shapes-wan":  # packaged: loaded by name, nothing to build
            from rlr_video.testbed import tiny_wan

            self.path, self.text_length = tiny_wan.TINY_SHAPES_WAN_DIR, tiny_wan.MAX_SEQUENCE_LENGTH
            return
        builder, text_length = FAMILY_BUILDERS[self.family]
        pipe = getattr(backbone_fixtures, builder)()
        # the transformer's changes go to every expert of a mixture of experts (each its own weights)
        changed = [("transformer", transformer, 0), ("transformer_2", transformer, 1), ("vae", vae, 0)]
        for component, changes, seed in changed:
            model = getattr(pipe, component, None)
            if changes and model is not None:
                torch.manual_seed(seed)
                setattr(pipe, component, getattr(diffusers, type(model).__name__).from_config(model.config | changes))
        self.path = directory / name
        pipe.save_pretrained(self.path)
        self.text_length = getattr(backbone_fixtures, text_length)

    def backbone(self, frames: int):
        from rlr_video.backbones import load_backbone

        return load_backbone(
            self.path,
            num_steps=STEPS,
            lora_rank=4,
            guidance_scale=1.0,
            height=self.height,
            width=self.width,
            num_frames=frames,
            max_sequence_length=self.text_length,
        )

    def describe(self) -> dict:
        cfg = json.loads((self.path / "transformer" / "config.json").read_text())
        vae = json.loads((self.path / "vae" / "config.json").read_text())
        keys = ("num_layers", "num_single_layers", "num_attention_heads", "attention_head_dim")
        widths = ("decoder_block_out_channels", "block_out_channels", "base_dim", "decoder_base_dim", "dim_mult")
        return {
            "transformer": {k: cfg[k] for k in keys if k in cfg},
            "experts": 2 if (self.path / "transformer_2").is_dir() else 1,
            "vae": {k: vae[k] for k in widths if vae.get(k) is not None},
            "video": [self.height, self.width],
        }


def make_backbone(m, frames: int, lora_rank: int = 4, guidance: float = 1.0):
    """A ``DiffusersBackbone`` of ``m``'s modules for ``frames`` frames (LoRA added once)."""
    from rlr_video.backbones.families.animatediff import AnimateDiffBackbone
    from rlr_video.backbones.families.modelscope import ModelScopeBackbone
    from rlr_video.backbones.lora import lora_parameters
    from rlr_video.backbones.options import BackboneOptions
    from rlr_video.backbones.schedulers import ddim_transition
    from rlr_video.backbones.text import ClipPromptEncoder

    cls = ModelScopeBackbone if m.family == "modelscope" else AnimateDiffBackbone
    options = BackboneOptions.from_kwargs(
        num_steps=STEPS, lora_rank=0 if m._lora else lora_rank, guidance_scale=guidance, dtype=m.dtype, device=m.device
    )
    scale = 2 ** (len(m.vae.config.block_out_channels) - 1)
    backbone = cls(
        m.unet,
        ClipPromptEncoder(m.tokenizer, m.text),
        m.vae,
        ddim_transition(m.scheduler, STEPS, 1.0),
        options,
        (4, frames, m.latent, m.latent),
        guidance,
        (frames, m.latent * scale, m.latent * scale),
        source=m.name,
    )
    m._lora = True
    for p in lora_parameters(m.unet):  # the constructor freezes everything, LoRA included
        p.data = p.data.float()
        p.requires_grad_(True)
    return backbone


# --------------------------------------------------------------------------- measuring


def settings(rows: int, frames: int) -> dict[str, MemoryOptions]:
    chunk = max(1, rows // 8)
    decode = max(1, frames // 8)
    return {
        "none": MemoryOptions(),
        "call": MemoryOptions("call"),
        "call+chunk": MemoryOptions("call", chunk, decode, BATCH * decode),
    }


def run_update(backbone, reward, h: int, options: MemoryOptions, track: bool, device: str):
    """One ``RLR.estimate``: (peak bytes, seconds) with the tracker, or (None, seconds)."""
    from rlr_video.estimators import RLR

    estimator = RLR(h=h, zo="latent_lr", zo_samples=1)
    handle = apply_memory_options(backbone, options, reward=reward, estimator=estimator)
    for p in backbone.trainable_parameters():
        p.grad = None

    def step():
        estimator.estimate(backbone, reward, PROMPTS, torch.Generator().manual_seed(0))

    try:
        if track:
            m = measure_peak(step, device)
            return m.peak, m.seconds
        return None, time_it(step, device)
    finally:
        handle.restore()
        for p in backbone.trainable_parameters():
            p.grad = None


def segment_peak(backbone, reward, options: MemoryOptions, device: str) -> int:
    """One denoiser call with gradients, the decoder and the reward, backward to the LoRA
    weights (the FO step's backprop segment)."""
    from rlr_video.chain import predict

    params = backbone.trainable_parameters()
    with torch.no_grad():
        cond = backbone.encode(PROMPTS)
        x = backbone.initial_latents(BATCH, torch.Generator().manual_seed(0)).to(device)
    handle = apply_memory_options(backbone, options, reward=reward)

    def step():
        with torch.enable_grad():
            out = predict(backbone, x, 1, cond, options.calls)
            r = reward(backbone.decode(out), PROMPTS)
            torch.autograd.grad(r.sum(), params, allow_unused=True)

    try:
        return measure_peak(step, device).peak
    finally:
        handle.restore()


def rss_step(name: str, frames: int, h: int, threads: int = 1):
    """For ``rss_peak_subprocess``: builds the model, returns one update as a callable."""
    torch.set_num_threads(threads)
    from rlr_video.estimators import RLR

    backbone = Model(name).backbone(frames)
    estimator = RLR(h=h, zo="latent_lr", zo_samples=1)
    return lambda: estimator.estimate(backbone, Brightness(), PROMPTS, torch.Generator().manual_seed(0))


def share(cm: CostModel, shape) -> float:
    comps = cm.call(shape, input_grad=True).breakdown()
    return comps.get("temporal_attention", 0) / max(1, sum(comps.values()))


@contextlib.contextmanager
def math_attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def bench_config(name: str, frames_list, hs, device: str, log, workdir: Path | None = None) -> dict:
    reward = Brightness()
    if name in CONFIGS:
        model = Model(name)
        out = {"config": name, "family": CONFIGS[name][0], "channels": CONFIGS[name][1], "latent": CONFIGS[name][2]}
    else:
        model = FamilyModel(name, workdir)
        frames_list = model.frames  # the family's valid frame counts
        out = {"config": name, "family": model.family, **model.describe()}
    out.update(rows=[], segments=[], temporal_share=[])
    middle = frames_list[len(frames_list) // 2]  # 16 (17 for LTX-Video): the segment, the tracker's time
    for frames in frames_list:
        backbone = model.backbone(frames)
        cm = CostModel(backbone, reward)
        cm_math = CostModel(backbone, reward, attention="math")
        planner = Planner(cm, batch=BATCH, zo="latent_lr", zo_samples=1)
        shape = cm.default_shape(BATCH)
        temporal = {
            "frames": frames,
            "predicted_share": share(cm, shape),
            "predicted_share_math": share(cm_math, shape),
        }
        for label, options in settings(planner.rows(), frames).items():
            for h in hs:
                measured, seconds = run_update(backbone, reward, h, options, True, device)
                est = planner.estimate(h, options)
                row = {
                    "frames": frames,
                    "h": h,
                    "setting": label,
                    "frame_chunk": options.frame_chunk,
                    "decode_chunk": options.decoder_chunk,
                    "measured": measured,
                    "predicted": est.update,
                    "error": est.update / measured - 1,
                    "peak_phase": est.bottleneck,
                    "seconds": seconds,
                }
                out["rows"].append(row)
                log(
                    f"{name:18} F={frames:<3} {label:10} h={h}  measured {measured / 2**20:8.1f} MiB  "
                    f"predicted {est.update / 2**20:8.1f} MiB  ({row['error']:+6.1%}, {est.bottleneck})  "
                    f"{seconds:6.2f} s"
                )
        if frames == middle:
            opts = settings(planner.rows(), frames)
            seg = {"frames": frames}
            for label, options in opts.items():
                seg[label] = segment_peak(backbone, reward, options, device)
            seg["chunked_vs_plain"] = seg["call+chunk"] / seg["none"]
            seg["chunked_vs_call"] = seg["call+chunk"] / seg["call"]
            out["segments"].append(seg)
            log(
                f"{name:18} F={frames} backprop segment: plain {seg['none'] / 2**20:.1f} MiB, "
                f"call {seg['call'] / 2**20:.1f}, chunked {seg['call+chunk'] / 2**20:.1f} "
                f"({seg['chunked_vs_plain']:.0%} of plain)"
            )
        if name.endswith("medium"):  # materialised scores: measured h = 1 peak and predicted share
            with math_attention():
                measured, _ = run_update(backbone, reward, 1, MemoryOptions(), True, device)
            pm = Planner(cm_math, batch=BATCH, zo="latent_lr", zo_samples=1).estimate(1, MemoryOptions()).update
            temporal.update(measured_math_h1=measured, predicted_math_h1=pm, error_math_h1=pm / measured - 1)
            log(
                f"{name:18} F={frames:<3} math kernel h=1: measured {measured / 2**20:.1f} MiB predicted "
                f"{pm / 2**20:.1f} MiB ({pm / measured - 1:+.1%}); temporal share {temporal['predicted_share']:.1%} "
                f"(flash) / {temporal['predicted_share_math']:.1%} (math)"
            )
        out["temporal_share"].append(temporal)
        if frames == middle:  # what the tracker costs in time: the same update untracked
            options = settings(planner.rows(), frames)["call"]
            _, plain = run_update(backbone, reward, 2, options, False, device)
            tracked = next(
                r["seconds"] for r in out["rows"] if r["frames"] == frames and r["h"] == 2 and r["setting"] == "call"
            )
            out["tracker_time_overhead"] = tracked / plain - 1
            log(f"{name:18} tracker time overhead (F={frames}, call, h=2): {tracked / plain - 1:+.0%}")
    return out


def _decoder(family: str) -> str | None:
    """A family's declared decoder (frame_local, causal, whole)."""
    from rlr_video.backbones.family import get_family

    return get_family(family).decoder


def summarise(results: list[dict]) -> dict:
    rows = [r for res in results for r in res["rows"]]
    errors = [abs(r["error"]) for r in rows]
    growth = {}
    for res in results:
        for frames in sorted({r["frames"] for r in res["rows"]}):
            by_h = {r["h"]: r["measured"] for r in res["rows"] if r["frames"] == frames and r["setting"] == "call"}
            if 1 in by_h and 4 in by_h:
                growth[f"{res['config']}/F{frames}"] = by_h[4] / by_h[1] - 1
    # A decoder that decodes the clip whole (LTX-Video's) has nothing to chunk: its segment is
    # reported, and the <= 40% target is for the families whose decoder chunks.
    segments = {res["config"]: s["chunked_vs_plain"] for res in results for s in res["segments"]}
    whole = {res["config"] for res in results if _decoder(res["family"]) == "whole"}
    chunkable = {k: v for k, v in segments.items() if k not in whole}
    by_family: dict[str, float] = {}
    for res in results:
        for r in res["rows"]:
            by_family[res["family"]] = max(by_family.get(res["family"], 0.0), abs(r["error"]))
    shares = {res["config"]: [t["predicted_share_math"] for t in res["temporal_share"]] for res in results}
    return {
        "median_abs_error": statistics.median(errors) if errors else None,
        "max_abs_error": max(errors) if errors else None,
        "max_abs_error_by_family": by_family,
        "rows": len(rows),
        "call_growth_h1_to_h4": growth,
        "max_call_growth": max(growth.values()) if growth else None,
        "segment_chunked_vs_plain_F16": segments,
        "temporal_share_math_by_F": shares,
        "targets": {
            "median_error_le_15pct": bool(errors) and statistics.median(errors) <= 0.15,
            "call_growth_le_10pct": bool(growth) and max(growth.values()) <= 0.10,
            "segment_le_40pct": bool(chunkable) and max(chunkable.values()) <= 0.40,
            "temporal_share_grows": all(all(a < b for a, b in zip(v, v[1:])) for v in shares.values()),
        },
    }


# --------------------------------------------------------------------------- GPU


def sd15_animatediff(device: str, frames: int = 16, meta: bool = False):
    """An SD-1.5-size AnimateDiff backbone (UNetMotion from the SD-1.5 UNet layout, block
    channels 320/640/1280/1280, cross-attention 768, and the v1.5 motion adapter layout), the SD
    VAE layout, a one-layer 768-wide text encoder, random weights, bf16, 256x256 video. With
    ``meta`` every model is on the meta device (predictions only, nothing allocated)."""
    from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel

    torch.manual_seed(0)
    m = type("SD15", (), {})()
    m.name, m.family, m.latent, m.dtype, m._lora = "sd15-animatediff", "animatediff", 32, torch.bfloat16, meta
    m.device = "meta" if meta else device
    with torch.device("meta" if meta else "cpu"):
        unet2d = UNet2DConditionModel(cross_attention_dim=768)  # SD-1.5's layout
        m.unet = UNetMotionModel.from_unet2d(unet2d, MotionAdapter()).to(torch.bfloat16)
        m.vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
        ).to(torch.bfloat16)
    m.vae.eval()
    m.tokenizer, m.text = _tiny_text(768)
    m.text = m.text.to(torch.bfloat16)
    m.scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False)
    backbone = make_backbone(m, frames, lora_rank=4)
    if meta:
        backbone.options.lora_rank = 4  # costed, not injected
    return backbone


def gpu_bench(out_dir: Path, log, hs=(1, 2, 4), predict_only: bool = False) -> dict:
    """SD-1.5-size AnimateDiff (``sd15_animatediff``), bf16, 256x256, 16 frames: measured vs
    predicted peak of one RLR update on CUDA (``predict_only``: the predictions alone, from
    meta-device models, on any machine)."""
    device = "cuda"
    backbone = sd15_animatediff(device, 16, meta=predict_only)
    reward = Brightness()
    cm = CostModel(backbone, reward, device=device)
    planner = Planner(cm, batch=BATCH, zo="latent_lr", zo_samples=1)
    rows = []
    for label, options in settings(planner.rows(), 16).items():
        for h in hs:
            measured = seconds = None
            if not predict_only:
                try:
                    measured, _ = run_update(backbone, reward, h, options, True, device)
                    _, seconds = run_update(backbone, reward, h, options, False, device)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
            est = planner.estimate(h, options)
            row = {
                "setting": label,
                "h": h,
                "measured": measured,
                "predicted": est.update,
                "seconds": seconds,
                "error": est.update / measured - 1 if measured else None,
                "fixed": est.fixed,
            }
            rows.append(row)
            log(json.dumps(row))
    result = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "none (predictions only)",
        "torch": torch.__version__,
        "rows": rows,
        "temporal_share": share(cm, cm.default_shape(BATCH)),
        "attention": cm.attention.name(40, torch.bfloat16),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if not predict_only or out_dir.name != "benchmarks":
        name = "memory_gpu_predicted.json" if predict_only else "memory_gpu.json"
        (out_dir / name).write_text(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=ALL_CONFIGS)
    families = sorted({config_family(c) for c in ALL_CONFIGS})
    parser.add_argument(
        "--families",
        nargs="*",
        choices=families,
        help="run only these families' configs and merge their rows into --out, keeping the other configs' rows",
    )
    parser.add_argument("--frames", nargs="*", type=int, default=[8, 16, 32])
    parser.add_argument("--h", nargs="*", type=int, default=[1, 2, 4])
    parser.add_argument("--quick", action="store_true", help="the tiny configs only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "memory.json")
    parser.add_argument("--gpu", action="store_true", help="the SD-1.5-size AnimateDiff benchmark on CUDA")
    parser.add_argument("--predict-only", action="store_true", help="with --gpu: predictions only (meta device)")
    parser.add_argument("--no-rss", action="store_true", help="skip the RSS cross-check subprocess")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # "modules that should be kept in float32: []"

    def log(line: str) -> None:
        print(line, flush=True)

    if args.gpu:
        out_dir = args.out if args.out.suffix != ".json" else args.out.parent
        gpu_bench(out_dir, log, tuple(args.h), args.predict_only)
        return 0
    configs = args.configs
    if args.families:
        configs = [c for c in ALL_CONFIGS if config_family(c) in args.families]
    configs = [c for c in configs if not (args.quick and c.endswith("medium"))]
    start = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as workdir:
        results = [bench_config(name, args.frames, args.h, "cpu", log, Path(workdir)) for name in configs]
    if args.families:
        merged = merge_rows(args.out, results, time.perf_counter() - start)
        log("")
        log(table(merged["results"], merged["summary"]))
        log(f"\nmerged {', '.join(configs)} into {args.out} in {time.perf_counter() - start:.0f} s")
        return 0
    cross = None
    if not args.no_rss:  # the tracker against the OS: a medium config, big tensors, fresh process
        name = next((c for c in configs if c.endswith("medium")), configs[0])
        frames, h = args.frames[0], args.h[0]
        res = next(r for r in results if r["config"] == name)
        tracked = next(
            r["measured"] for r in res["rows"] if r["frames"] == frames and r["h"] == h and r["setting"] == "none"
        )
        rss = rss_peak_subprocess(f"{__file__}:rss_step", {"name": name, "frames": frames, "h": h})
        cross = {
            "config": name,
            "frames": frames,
            "h": h,
            "tracker": tracked,
            "rss": rss["rss_peak"],
            "rss_vs_tracker": rss["rss_peak"] / tracked - 1,
        }
        log(
            f"RSS cross-check ({name}, F={frames}, h={h}, no checkpointing): tracker {tracked / 2**20:.1f} MiB, "
            f"fresh-process peak RSS {rss['rss_peak'] / 2**20:.1f} MiB ({cross['rss_vs_tracker']:+.1%})"
        )
    summary = summarise(results)
    # what the cost model predicts for the GPU benchmark's SD-1.5-size model (no GPU needed)
    sd15 = gpu_bench(args.out.parent, lambda line: None, tuple(args.h), predict_only=True)
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpu_threads": args.threads,
            "torch": torch.__version__,
            "device": "cpu",
            "measurement": "TensorMemoryTracker (live tensor bytes)",
        },
        "setup": {
            "steps": STEPS,
            "batch": BATCH,
            "zo": "latent_lr",
            "zo_samples": 1,
            "reward": "brightness (pixels)",
            "lora_rank": 4,
            "guidance": "off",
            "prediction": "uncalibrated cost model (Planner.estimate)",
        },
        "results": results,
        "rss_cross_check": cross,
        "sd15_animatediff_predicted": sd15,
        "summary": summary,
        "seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    log("")
    log(table(results, summary))
    log(f"\nwrote {args.out} in {report['seconds']:.0f} s")
    return 0


def merge_rows(out: Path, results: list[dict], seconds: float) -> dict:
    """``out`` with the configs of ``results`` replaced or added (the others' rows, the RSS
    cross-check and the GPU prediction as they were), re-summarised over every config."""
    report = json.loads(out.read_text())
    ran = {r["config"] for r in results}
    report["results"] = [r for r in report["results"] if r["config"] not in ran] + results
    report["summary"] = summarise(report["results"])
    report.setdefault("merged_seconds", {}).update({name: seconds for name in ran})
    out.write_text(json.dumps(report, indent=2))
    return report


def table(results: list[dict], summary: dict) -> str:
    lines = [
        f"{'config':18} {'F':>3} {'setting':10} {'h':>2} {'measured':>10} {'predicted':>10} {'error':>7} {'time':>7}",
        "-" * 74,
    ]
    for res in results:
        for r in res["rows"]:
            lines.append(
                f"{res['config']:18} {r['frames']:>3} {r['setting']:10} {r['h']:>2} "
                f"{r['measured'] / 2**20:8.1f}Mi {r['predicted'] / 2**20:8.1f}Mi {r['error']:+7.1%} "
                f"{r['seconds']:6.2f}s"
            )
    t = summary["targets"]
    growth = summary["max_call_growth"]
    lines += [
        "",
        f"median |error| {summary['median_abs_error']:.1%} (max {summary['max_abs_error']:.1%}) "
        f"target <= 15%: {'met' if t['median_error_le_15pct'] else 'MISSED'}",
        "per-call checkpointing, peak growth h=1 -> h=4: "
        + (
            f"max {growth:+.1%} target <= 10%: {'met' if t['call_growth_le_10pct'] else 'MISSED'}"
            if growth is not None
            else "not measured (--h must include 1 and 4)"
        ),
        "chunked backprop segment at F=16 vs plain: "
        + ", ".join(f"{k} {v:.0%}" for k, v in summary["segment_chunked_vs_plain_F16"].items())
        + f" target <= 40% (decoders that chunk): {'met' if t['segment_le_40pct'] else 'MISSED'}",
        "temporal attention share with materialised scores, F = 8/16/32: "
        + "; ".join(f"{k} " + "/".join(f"{x:.1%}" for x in v) for k, v in summary["temporal_share_math_by_F"].items())
        + f" grows with F: {'yes' if t['temporal_share_grows'] else 'NO'}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
