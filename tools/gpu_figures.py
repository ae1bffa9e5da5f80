"""GPU figures in one call: real-architecture models with random weights, measured on this card.

For each model below (the published configs are written here, with their sources; the weights
are random, nothing is downloaded), the script saves a diffusers pipeline folder, loads it the way
users do and, for the plan ``rlr-video plan PRESET --budget auto`` picks on this card:

- the measured peak of one planned RLR update against the planner's prediction, and the whole
  card's use (weights, LoRA, AdamW state and the update) against the plan's total;
- seconds per update: RLR as planned, RLR h = 2 (``param_es``, and the preset's ZO), truncated
  backprop K = 1, GRPO and NFT, all under the plan's memory options and the preset's autocast;
- rollout throughput (encode, chain, decode) against the family's diffusers pipeline built from
  the same modules, at the same steps, guidance and initial latents (the deterministic chain:
  the frames are compared too);
- the same with xformers, when it is installed.

Targets, recorded with pass/fail: AnimateDiff 256x256x16 RLR within 24 GiB (the 24 GiB plan, the
card's whole use measured); predicted peaks within 15%; RLR h = 2 at most 1.5x truncated BP K = 1;
rollout at least 0.95x the pipeline.

    python tools/gpu_figures.py                           # on a GPU: benchmarks/gpu.json, <= 8 min
    python tools/gpu_figures.py --models animatediff wan21 --budget-s 300
    python tools/gpu_figures.py --tiny --out /tmp/gpu.json  # the same code at tiny sizes on the CPU

Time: ``--budget-s`` (default 420 s) is shared by the models in turn; a model starts only if its
share covers its ``min_s`` (build, load, one update), and each measurement runs only if the time
its model has left covers what the ones before it took, so the script ends in time and says what
it skipped. The JSON is written after every measurement (a killed run keeps its figures).

Models (``MODELS``): AnimateDiff (SD-1.5 UNet + the v1-5-2 motion adapter, SD VAE, SD-1.5's CLIP text
encoder) at 256x256x16 with the ``animatediff-aesthetic`` preset; Wan 2.1 T2V 1.3B at 480x832x33
with ``wan-composite``; Wan 2.2 TI2V-5B with ``wan22-ti2v-5b-composite`` at the first size whose
plan fits both 80 GB and this card (``size_plan`` records the 80 GB plan), when the family
``wan22-ti2v`` is registered. Each runs ``--steps`` (default 10) chain
steps; the reward is the LAION aesthetic predictor on a random-weight open_clip ViT-L-14. Wan's text
encoder is UMT5-XXL's width with one of its 24 layers (its weights' full size is recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import os
import platform
import shutil
import string
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GIB = 2**30
TARGETS = {
    "animatediff_rlr_within_bytes": 24 * GIB,
    "prediction_error_max": 0.15,
    "rlr_h2_over_truncated_bp_max": 1.5,
    "rollout_throughput_min": 0.95,
}
PROMPT = "a red circle moving left on a blue background"
WORDS = ["a", "red", "green", "blue", "yellow", "circle", "square", "triangle", "moving", "left", "right", "on", "the"]
WORDS += ["up", "down", "background"]

# --------------------------------------------------------------------------- published configs
# Architecture keys only (the rest are the classes' defaults). Sources: the folders of
# rlr_video/assets/hub-configs and their README, which name where each value was read.

# runwayml/stable-diffusion-v1-5 unet/config.json (SD-1.5; epiCRealism shares its shapes)
SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    in_channels=4,
    out_channels=4,
    sample_size=64,
)
# guoyww/animatediff-motion-adapter-v1-5-2 config.json (diffusers'
# scripts/convert_animatediff_motion_module_to_diffusers.py for mm_sd_v15_v2.ckpt)
MOTION_ADAPTER_V152 = dict(
    block_out_channels=(320, 640, 1280, 1280),
    motion_layers_per_block=2,
    motion_mid_block_layers_per_block=1,
    motion_num_attention_heads=8,
    motion_norm_num_groups=32,
    motion_max_seq_length=32,
    use_motion_mid_block=True,
)
# runwayml/stable-diffusion-v1-5 vae/config.json
SD_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    scaling_factor=0.18215,
)
# runwayml/stable-diffusion-v1-5 text_encoder/config.json (the vocabulary is this script's own)
SD15_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
# The scheduler AnimateDiff's documentation samples SD-1.5 bases with (DDIM, linear betas,
# linspace spacing, steps_offset 1): the chain rlr-video reproduces, so the pipeline uses it too.
SD_SCHEDULER = dict(beta_schedule="linear", clip_sample=False, timestep_spacing="linspace", steps_offset=1)

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json (diffusers'
# scripts/convert_wan_to_diffusers.py, get_transformer_config("Wan-T2V-1.3B"))
WAN21_13B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
WAN21_VAE: dict = {}  # AutoencoderKLWan()'s defaults: the published vae/config.json holds them
# google/umt5-xxl config.json (Wan's text encoder), with one of its 24 layers
UMT5_XXL = dict(
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_heads=64,
    num_layers=24,
    relative_attention_num_buckets=32,
    feed_forward_proj="gated-gelu",
    dense_act_fn="gelu_pytorch_tanh",
    is_gated_act=True,
    vocab_size=256384,
    layer_norm_epsilon=1e-6,
)
# Wan-AI/Wan2.2-TI2V-5B-Diffusers (diffusers' convert_wan_to_diffusers.py, "Wan2.2-TI2V-5B")
WAN22_TI2V_5B = dict(WAN21_13B, num_attention_heads=24, ffn_dim=14336, in_channels=48, out_channels=48)
# its vae22_diffusers_config: the 2.2 VAE and its 48 latent means and standard deviations
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip
WAN22_VAE = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_temporal=4,
    scale_factor_spatial=16,
    latents_mean=WAN22_LATENTS_MEAN,
    latents_std=WAN22_LATENTS_STD,
)

# Tiny stand-ins (--tiny): the same classes and layouts, scaled down until the CPU runs them in
# seconds; the test suite runs the whole script with them (tests/test_gpu_figures.py). Their
# figures test the code, not the planner: at this size Wan's peak is the text encoder's attention
# bias, 4 sequences x 2 heads x 512 x 512 tokens in float32 (8 MiB; the planner leaves the prompt
# encoding out: with UMT5-XXL's 64 heads it is 256 MiB), so its predictions are 85% under.
TINY = {
    "sd_unet": dict(
        SD15_UNET, block_out_channels=(8, 8, 16, 16), layers_per_block=1, cross_attention_dim=16, norm_num_groups=4
    ),
    "motion": dict(
        MOTION_ADAPTER_V152,
        block_out_channels=(8, 8, 16, 16),
        motion_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_norm_num_groups=4,
    ),
    "sd_vae": dict(SD_VAE, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4),
    "sd_text": dict(SD15_TEXT, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1),
    "wan": dict(WAN21_13B, num_attention_heads=2, attention_head_dim=8, text_dim=32, freq_dim=16, ffn_dim=32),
    "wan_vae": dict(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
    "umt5": dict(UMT5_XXL, d_model=32, d_kv=8, d_ff=64, num_heads=2, relative_attention_num_buckets=8),
    "wan22": dict(WAN22_TI2V_5B, num_attention_heads=2, attention_head_dim=8, text_dim=32, freq_dim=16, ffn_dim=32),
    "wan22_vae": dict(WAN22_VAE, base_dim=4, decoder_base_dim=6, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
}
for _key in ("wan", "wan22"):
    TINY[_key]["num_layers"] = 1


# --------------------------------------------------------------------------- tokenizers


def clip_tokenizer(max_length: int = 77):
    """A byte-pair ``CLIPTokenizer`` over the letters with merges that make ``WORDS`` (the real
    vocabulary is not needed: the tokens' embedding table is the only part it sizes)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            if (pieces[0], pieces[1]) not in merges:
                merges.append((pieces[0], pieces[1]))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def t5_tokenizer(max_length: int = 512):
    """A unigram ``T5Tokenizer`` over ``WORDS`` and the letters."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in string.ascii_lowercase]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


# --------------------------------------------------------------------------- builders


def _dtype_context(device: torch.device):
    """Build modules directly on ``device``: a GPU initialises billions of weights in seconds."""
    return torch.device(device)


def build_animatediff(folder: Path, tiny: bool, device: torch.device, dtype: torch.dtype) -> None:
    from diffusers import (
        AnimateDiffPipeline,
        AutoencoderKL,
        DDIMScheduler,
        MotionAdapter,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    text_cfg = TINY["sd_text"] if tiny else SD15_TEXT
    with _dtype_context(device):
        text = CLIPTextModel(
            CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=1, pad_token_id=1, **text_cfg)
        )
        unet = UNet2DConditionModel(**(TINY["sd_unet"] if tiny else SD15_UNET))
        adapter = MotionAdapter(**(TINY["motion"] if tiny else MOTION_ADAPTER_V152))
        vae = AutoencoderKL(**(TINY["sd_vae"] if tiny else SD_VAE))
        pipe = AnimateDiffPipeline(
            vae=vae,
            text_encoder=text,
            tokenizer=tokenizer,
            unet=unet,
            motion_adapter=adapter,
            scheduler=DDIMScheduler(**SD_SCHEDULER),
            feature_extractor=None,
            image_encoder=None,
        )
    pipe.to(dtype=dtype)
    pipe.save_pretrained(folder)


def _umt5(tiny: bool, tokenizer):
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = dict(TINY["umt5"] if tiny else UMT5_XXL, num_layers=1, vocab_size=len(tokenizer))
    return UMT5EncoderModel(UMT5Config(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **cfg))


def _build_wan(folder, tiny, device, dtype, transformer_cfg, vae_cfg, shift, expand_timesteps):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    tokenizer = t5_tokenizer()
    with _dtype_context(device):
        extra = {"expand_timesteps": True} if expand_timesteps else {}
        pipe = WanPipeline(
            tokenizer=tokenizer,
            text_encoder=_umt5(tiny, tokenizer),
            vae=AutoencoderKLWan(**vae_cfg),
            transformer=WanTransformer3DModel(**transformer_cfg),
            # the published UniPC config's flow_shift, as the Euler scheduler the chain reproduces
            scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
            **extra,
        )
    pipe.to(dtype=dtype)
    pipe.save_pretrained(folder)


def build_wan21(folder: Path, tiny: bool, device: torch.device, dtype: torch.dtype) -> None:
    vae = TINY["wan_vae"] if tiny else WAN21_VAE
    _build_wan(folder, tiny, device, dtype, TINY["wan"] if tiny else WAN21_13B, vae, 3.0, False)


def build_wan22_ti2v(folder: Path, tiny: bool, device: torch.device, dtype: torch.dtype) -> None:
    vae = TINY["wan22_vae"] if tiny else WAN22_VAE
    _build_wan(folder, tiny, device, dtype, TINY["wan22"] if tiny else WAN22_TI2V_5B, vae, 5.0, True)


@dataclass
class ModelSpec:
    """One model of the GPU figures.

    Attributes:
        key: its name in the JSON and in ``--models``.
        family: the registered family it needs (skipped with a note when absent).
        preset: the preset whose estimator, memory, train and model settings the plan uses.
        build: ``(folder, tiny, device, dtype)``: save the pipeline with random weights.
        sizes: (height, width, frames) candidates, the first whose plan fits is used; ``tiny_sizes``
            for ``--tiny``.
        share: its share of the time budget (of what is left when its turn comes).
        min_s: seconds it needs at least to be built, loaded and measured once on a GPU (a
            guard, not a figure): with less time left it is skipped, so the run ends in time.
        size_budget: a budget the chosen size must fit besides the card's (the issue's "a size
            the planner says fits 80 GB"); not applied with ``--tiny``.
        overrides: preset overrides besides the path, size, steps and reward.
        plans: extra budgets to plan and measure (e.g. the 24 GiB target's).
        text_encoder_full: the text encoder's real config where the one built is cut down, to
            record its full weights.
    """

    key: str
    family: str
    preset: str
    build: Callable[[Path, bool, torch.device, torch.dtype], None]
    sizes: list[tuple[int, int, int]]
    tiny_sizes: list[tuple[int, int, int]]
    share: float
    min_s: float
    overrides: list[str] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)
    text_encoder_full: dict | None = None
    size_budget: str | None = None


MODELS = [
    ModelSpec(
        "animatediff",
        "animatediff",
        "animatediff-aesthetic",
        build_animatediff,
        [(256, 256, 16)],
        [(32, 32, 4)],
        0.3,
        60.0,
        ["model.options.motion_adapter=null"],
        plans={"24GiB": "24GiB"},
    ),
    ModelSpec(
        "wan21-1.3b",
        "wan",
        "wan-composite",
        build_wan21,
        [(480, 832, 33)],
        [(32, 32, 5)],
        0.5,
        90.0,
        text_encoder_full=UMT5_XXL,
    ),
    ModelSpec(
        "wan22-ti2v-5b",
        "wan22-ti2v",
        "wan22-ti2v-5b-composite",
        build_wan22_ti2v,
        [(480, 832, 33), (480, 832, 17)],
        [(32, 64, 5)],
        1.0,
        120.0,
        text_encoder_full=UMT5_XXL,
        size_budget="80GB",
    ),
]


# --------------------------------------------------------------------------- measuring


class Clock:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def allocated(device: torch.device) -> int:
    """Bytes held on ``device`` now: the CUDA allocator's count on a GPU; on the CPU (``--tiny``)
    the storages of every live tensor the garbage collector knows, its closest equivalent (the
    tensor tracker's peaks, like ``max_memory_allocated``, count only what a step adds)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    storages = {}
    for obj in gc.get_objects():
        # type(), not isinstance: isinstance reads __class__, which some deprecated objects warn on
        if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu" and not obj.is_meta:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


ALLOCATED = {"cuda": "torch.cuda.memory_allocated", "cpu": "live CPU tensors' storages (gc)"}


def random_aesthetic_head(path: Path) -> None:
    """The improved aesthetic predictor's published keys and shapes (sac+logos+ava1-l14-linearMSE.pth,
    christophschuhmann/improved-aesthetic-predictor), random values."""
    shapes = {
        "layers.0.weight": (1024, 768),
        "layers.0.bias": (1024,),
        "layers.2.weight": (128, 1024),
        "layers.2.bias": (128,),
        "layers.4.weight": (64, 128),
        "layers.4.bias": (64,),
        "layers.6.weight": (16, 64),
        "layers.6.bias": (16,),
        "layers.7.weight": (1, 16),
        "layers.7.bias": (1,),
    }
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) / (s[-1] ** 0.5 if len(s) == 2 else 10.0) for k, s in shapes.items()}
    torch.save(state, path)


TINY_TOWER = "gpu-figures-tiny-clip-768"


def register_tiny_tower(folder: Path) -> None:
    """A one-layer open_clip ViT with the 768-wide embedding the aesthetic head takes."""
    import open_clip

    config = {
        "embed_dim": 768,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY_TOWER}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)


class Run:
    """One model's measurements, each recorded into ``out`` and saved at once."""

    def __init__(self, spec: ModelSpec, args, device: torch.device, clock: Clock, save: Callable[[], None], log):
        self.spec, self.args, self.device, self.clock, self.save, self.log = spec, args, device, clock, save, log
        self.out: dict[str, Any] = {"skipped": {}}
        self.cost: dict[str, float] = {}  # seconds each measurement took, to foresee the next ones

    def fits(self, name: str, expected: float) -> bool:
        if self.clock.left() >= expected:
            return True
        self.out["skipped"][name] = f"time budget: {self.clock.left():.0f} s left, about {expected:.0f} s needed"
        self.log(f"  skip {name}: {self.out['skipped'][name]}")
        self.save()
        return False

    def record(self, key: str, value: Any) -> None:
        self.out[key] = value
        self.save()


def autocast(config, device: torch.device):
    """The trainer's ``accelerator.autocast()`` for ``train.mixed_precision`` bf16 on a GPU."""
    if device.type == "cuda" and config.train.mixed_precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_context(config):
    from rlr_video.config import run_context as context

    return context(config)


def estimator_for(name: str, config, **keys):
    """The registered estimator ``name``: RLR is the preset's estimator with ``keys`` replaced;
    another one its config's defaults with ``keys`` (GRPO and NFT: the batch is one prompt's group)."""
    from rlr_video.estimators.registry import config_class

    # the run as fixed (no memory.budget: the plan's options are applied by hand)
    run = dataclasses.replace(run_context(config), memory_budget=False, memory_checkpoint="auto")
    if name == config.estimator.name:
        chosen = dataclasses.replace(config.estimator, **keys)
    else:
        run = dataclasses.replace(run, group_size=config.train.batch_size)
        chosen = config_class(name)(name=name, **keys)
    chosen.validate(run)  # the checks `rlr-video train` makes: a refused setting fails here, named
    return chosen.build(run)


# The target's pair: RLR h = 2 (the paper's: one FO step, param_es) over truncated BP K = 1.
TARGET_PAIR = {
    "truncated_bp(K=1)": lambda config: estimator_for("truncated_bp", config, K=1),
    "rlr(h=2, param_es)": lambda config: estimator_for("rlr", config, h=2, zo="param_es", fo_steps=1),
}


def plan_summary(plan) -> dict:
    e = plan.estimate
    return {
        "budget": plan.budget,
        "h": plan.h,
        "zo": plan.zo,
        "checkpoint": plan.options.checkpoint,
        "frame_chunk": plan.options.frame_chunk,
        "predicted_update": e.update,
        "predicted_total": e.total,
        "fixed": e.fixed,
        "phases": dict(e.phases),
    }


def run_model(spec: ModelSpec, args, device: torch.device, clock: Clock, report: dict, save, log) -> None:
    from rlr_video.backbones.family import families
    from rlr_video.config import load_config
    from rlr_video.train.components import build_components

    run = Run(spec, args, device, clock, save, log)
    report["models"][spec.key] = run.out
    if spec.family not in families():
        run.out["skipped"]["all"] = (
            f"family {spec.family!r} is not registered in this checkout (it comes with the Wan 2.2 branch)"
        )
        log(f"{spec.key}: {run.out['skipped']['all']}")
        save()
        return
    if not run.fits("all", 0.0 if args.tiny else spec.min_s):
        return
    dtype = torch.float32 if args.tiny else torch.bfloat16
    work = Path(tempfile.mkdtemp(prefix=f"gpu-figures-{spec.key}-"))
    try:
        start = time.perf_counter()
        folder = work / "model"
        torch.manual_seed(0)
        spec.build(folder, args.tiny, device, dtype)
        free(device)
        run.record("build_s", time.perf_counter() - start)
        tower = TINY_TOWER if args.tiny else "ViT-L-14"
        if args.tiny:
            register_tiny_tower(work / "open_clip")
        head = work / "aesthetic-head.pth"
        random_aesthetic_head(head)
        reward = f"{{aesthetic: {{model: {tower}, pretrained: null, head: '{head}'}}}}"

        def overrides_for(size) -> list[str]:
            height, width, frames = size
            overrides = [
                f"model.path={folder}",
                f"model.height={height}",
                f"model.width={width}",
                f"model.frames={frames}",
                f"model.num_steps={args.steps}",
                f"reward={reward}",
                *spec.overrides,
            ]
            if args.tiny:
                overrides += ["model.dtype=float32", "train.mixed_precision=no"]
            return overrides

        def plan_for(size, budget: str):
            """(config, plan) of ``rlr-video plan PRESET --budget BUDGET`` at ``size`` (meta device)."""
            config = load_config(spec.preset, [*overrides_for(size), f"memory.budget={budget}"])
            return config, build_components(config, device, meta=True).plan

        # the plan `rlr-video plan PRESET --budget auto` picks on this card, at the first size that
        # fits it (and spec.size_budget, where one is set)
        from rlr_video.memory.planner import BudgetTooSmall

        sizes = spec.tiny_sizes if args.tiny else spec.sizes
        size_budget = None if args.tiny else spec.size_budget
        config = plan = size = None
        tried = {}
        for candidate in sizes:
            try:
                if size_budget is not None:
                    _, other = plan_for(candidate, size_budget)
                    run.record("size_plan", {"budget": size_budget, "size": list(candidate), **plan_summary(other)})
                config, plan = plan_for(candidate, args.budget)
                size = candidate
                break
            except BudgetTooSmall as err:
                tried[str(candidate)] = str(err)
        if plan is None:
            run.out["skipped"]["all"] = f"no size fits the budget: {tried}"
            run.save()
            log(f"{spec.key}: {run.out['skipped']['all']}")
            return
        height, width, frames = config.model.height, config.model.width, config.model.frames
        run.record("video", {"height": height, "width": width, "frames": frames, "batch": config.train.batch_size})
        run.record("steps", args.steps)
        run.record("plan", plan_summary(plan))
        if tried:
            run.record("sizes_too_large", tried)
        log(f"{spec.key}: {frames}x{height}x{width}, plan h={plan.h} {plan.options.checkpoint} zo={plan.zo}")

        start = time.perf_counter()
        torch.manual_seed(0)
        # the run: the same config without the budget (the plan is made), its choices applied below
        fixed = load_config(spec.preset, [*overrides_for(size), "memory.budget=null", "memory.checkpoint=auto"])
        parts = build_components(fixed, device)
        backbone, reward_fn = parts.backbone, parts.reward
        planned = dataclasses.replace(config.estimator, **plan.estimator_settings()).build(run_context(config))
        run.record("load_s", time.perf_counter() - start)
        if spec.text_encoder_full is not None:
            full = _full_text_encoder_bytes(spec.text_encoder_full, dtype)
            run.record("text_encoder_note", {"built_layers": 1, "full_weights_bytes": full})
        params = backbone.trainable_parameters()
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        for p in params:  # AdamW's state, allocated as training holds it
            p.grad = torch.zeros_like(p)
        optimizer.step()
        prompts = prompts_of(config)
        options = plan.options

        def update(estimator, memory=options):
            """One update under ``memory`` (the run's plan's options unless given) and the autocast
            the trainer uses."""

            def fn():
                from rlr_video.memory.recompute import apply_memory_options

                for p in params:
                    p.grad = None
                handle = apply_memory_options(backbone, memory, reward=reward_fn, estimator=estimator)
                try:
                    with autocast(config, device):
                        return estimator.estimate(backbone, reward_fn, prompts, torch.Generator().manual_seed(0))
                finally:
                    handle.restore()

            return fn

        measure_runs(run, config, backbone, reward_fn, planned, plan, update, device)
        rollout_vs_pipeline(run, config, backbone, folder, device)
        extras(run, config, update, device)
        xformers_figures(run, config, backbone, folder, update, device)
    except torch.cuda.OutOfMemoryError as err:
        run.record("error", f"out of memory: {str(err).splitlines()[0]}")
        log(f"{spec.key}: out of memory")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        free(device)


def _full_text_encoder_bytes(config: dict, dtype: torch.dtype) -> int:
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**config))
    return sum(p.numel() for p in model.parameters()) * torch.finfo(dtype).bits // 8


def measure_peak_and_time(fn, device: torch.device) -> tuple[int, float, int]:
    """(peak bytes above the start, seconds, bytes allocated at the start)."""
    from rlr_video.memory.probe import measure_peak

    free(device)
    start = allocated(device)
    m = measure_peak(fn, device)
    return m.peak, m.seconds, start


def measure_runs(run: Run, config, backbone, reward_fn, planned, plan, update, device) -> None:
    """A warm-up update (truncated BP K = 1: lazy initialisation, kernels and caches are not an
    update's memory), the planned RLR update's peak, then the seconds of truncated BP K = 1 and
    RLR h = 2."""
    warm, _ = timed(update(TARGET_PAIR["truncated_bp(K=1)"](config)), device)
    run.record("seconds_warm_up", warm)
    peak, seconds, start = measure_peak_and_time(update(planned), device)
    predicted = plan.estimate.update
    card = {
        "measured_update": peak,
        "predicted_update": predicted,
        "error": predicted / peak - 1,
        "measured_total": start + peak,
        "predicted_total": plan.estimate.total,
        "total_counted_by": ALLOCATED[device.type],
        "seconds": seconds,
    }
    run.record("peak", card)
    run.cost["update"] = seconds
    run.log(f"  planned RLR: peak {peak / GIB:.2f} GiB, predicted {predicted / GIB:.2f} GiB ({card['error']:+.1%})")
    times: dict[str, float] = {"rlr (planned)": seconds}  # its peak's run: one update
    run.record("seconds_per_update", times)
    for name, make in TARGET_PAIR.items():
        if not run.fits(name, 1.3 * run.cost["update"]):
            continue
        seconds, _ = timed(update(make(config)), device)
        times[name] = seconds
        run.cost["update"] = max(run.cost["update"], seconds)
        run.save()
        run.log(f"  {name}: {seconds:.2f} s")
    if "truncated_bp(K=1)" in times and "rlr(h=2, param_es)" in times:
        value = times["rlr(h=2, param_es)"] / times["truncated_bp(K=1)"]
        limit = TARGETS["rlr_h2_over_truncated_bp_max"]
        run.record(
            "rlr_h2_over_truncated_bp",
            {"value": value, "max": limit, "met": value <= limit},
        )
    # extra plans (the 24 GiB target): the same config planned for that budget, measured
    from rlr_video.memory.planner import BudgetTooSmall
    from rlr_video.train.components import make_plan

    extra: dict[str, Any] = {}
    for label, budget in run.spec.plans.items():
        if run.args.tiny:
            budget = "64MiB"  # the tiny models' scale
        if not run.fits(f"plan {label}", 1.3 * run.cost["update"]):
            continue
        try:
            other = make_plan(config, backbone, reward_fn, device, budget)
        except BudgetTooSmall as err:
            extra[label] = {"fits": False, "why": str(err)}
            run.record("plans", extra)
            run.log(f"  plan {label}: does not fit")
            continue
        estimator = dataclasses.replace(config.estimator, **other.estimator_settings()).build(run_context(config))
        peak, seconds, start = measure_peak_and_time(update(estimator, other.options), device)
        total = start + peak
        extra[label] = {
            "plan": plan_summary(other),
            "measured_update": peak,
            "error": other.estimate.update / peak - 1,
            "measured_total": total,
            "seconds": seconds,
            "within_budget": total <= other.budget,
        }
        run.record("plans", extra)
        run.log(f"  plan {label}: h={other.h}, whole use {total / GIB:.2f} GiB of {other.budget / GIB:.2f} GiB")


def rollout_vs_pipeline(run: Run, config, backbone, folder: Path, device: torch.device, label: str = "rollout") -> None:
    """Encode + chain + decode against the family's pipeline built from the same modules, with the
    same initial latents; both deterministic (eta / noise level 0), so the frames must agree."""
    if not run.fits(label, 2.2 * run.cost.get("rollout", run.cost["update"])):
        return
    import inspect

    pipe = pipeline_of(backbone, folder)
    rows: dict[str, list[float]] = {"ours": [], "pipeline": []}
    frames = {}
    prompts = prompts_of(config)
    x_T = backbone.initial_latents(len(prompts), torch.Generator().manual_seed(0))
    family_kwargs = {"height": backbone.height, "width": backbone.width, "num_frames": backbone.num_frames}
    if "max_sequence_length" in inspect.signature(pipe.__call__).parameters:
        family_kwargs["max_sequence_length"] = backbone.prompt_encoder.max_length

    def ours():
        from rlr_video.chain import rollout

        with torch.no_grad():
            cond = backbone.encode(prompts)
            traj = rollout(backbone, cond, torch.Generator().manual_seed(0), len(prompts), stochastic=())
            return backbone.decode(traj.sample)

    def theirs():
        return pipe(
            prompts,
            negative_prompt=[backbone.negative_prompt] * len(prompts),
            num_inference_steps=backbone.num_steps,
            guidance_scale=backbone.guidance_scale,
            latents=x_T.clone().to(device),
            output_type="pt",
            **family_kwargs,
        ).frames

    reps = run.args.reps
    for rep in range(reps):
        pair = [("ours", ours), ("pipeline", theirs)]
        for name, fn in pair if rep % 2 == 0 else pair[::-1]:
            seconds, video = timed(fn, device)
            rows[name].append(seconds)
            frames[name] = video
            run.cost["rollout"] = max(run.cost.get("rollout", 0.0), seconds)
        if rep + 1 < reps and not run.fits(f"{label} rep {rep + 2}", 2.2 * run.cost["rollout"]):
            break
    a, b = frames["ours"].float(), frames["pipeline"].float().to(frames["ours"].device)
    value = min(rows["pipeline"]) / min(rows["ours"])
    run.record(
        label,
        {
            "seconds": rows,
            "throughput": value,
            "min": TARGETS["rollout_throughput_min"],
            "met": value >= TARGETS["rollout_throughput_min"],
            "max_abs_diff": float((a - b).abs().max()),
            "mean_abs_diff": float((a - b).abs().mean()),
            "rel_l2_diff": float((a - b).double().norm() / b.double().norm()),
            "path_layers": path_layers(backbone),
            "note": "the first repetition of each is also its warm-up",
        },
    )
    run.log(f"  {label}: pipeline / ours throughput {value:.3f}")


def path_layers(backbone) -> dict[str, int]:
    """The linear and convolution layers a video's path through text encoder, chain and decoder
    can cross (``depth``: the text encoder's, the denoiser's per step and the decoder's) and their
    largest fan-in: what float32 rounding between two orders of the same sums scales with
    (tests/tolerances.py, ``network_rtol``)."""
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)

    def count(module) -> tuple[int, int]:
        found = [m for m in module.modules() if isinstance(m, kinds)]
        return len(found), max((m.weight[0].numel() for m in found), default=1)

    parts = [count(backbone.prompt_encoder.text_encoder), count(backbone.denoiser)]
    parts.append(count(backbone.vae.decoder) if backbone.vae is not None else (0, 1))
    depth = parts[0][0] + backbone.num_steps * parts[1][0] + parts[2][0]
    return {"depth": depth, "fan_in": max(fan for _, fan in parts)}


def prompts_of(config) -> list[str]:
    """One prompt for the whole batch: GRPO and NFT see one group, the others the same videos."""
    return [PROMPT] * config.train.batch_size


def pipeline_of(backbone, folder: Path):
    """The family's diffusers pipeline on the backbone's own modules (its scheduler from the folder)."""
    import diffusers

    index = json.loads((folder / "model_index.json").read_text())
    cls = getattr(diffusers, index["_class_name"])
    given = {
        backbone.denoiser_component: backbone.denoiser,
        "vae": backbone.vae,
        "text_encoder": backbone.prompt_encoder.text_encoder,
        "tokenizer": backbone.prompt_encoder.tokenizer,
    }
    rest = {k: None for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and k not in given}
    rest.pop("scheduler", None)
    pipe = cls.from_pretrained(folder, **given, **rest)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def extras(run: Run, config, update, device) -> None:
    """GRPO, NFT and RLR h = 2 as the preset sets it (its fo_steps and ZO), under the plan's options."""
    from rlr_video.estimators.registry import available_estimators

    times = run.out.setdefault("seconds_per_update", {})
    jobs = [("rlr(h=2, preset)", "rlr", {"h": 2}, 1.3), ("grpo", "grpo", {}, 3.0), ("nft", "nft", {}, 3.0)]
    for name, registered, keys, factor in jobs:
        if registered not in available_estimators():
            run.out["skipped"][name] = f"estimator {registered!r} is not registered"
            continue
        if not run.fits(name, factor * run.cost["update"]):
            continue
        seconds, _ = timed(update(estimator_for(registered, config, **keys)), device)
        times[name] = seconds
        run.save()
        run.log(f"  {name}: {seconds:.2f} s (one run)")


def xformers_figures(run: Run, config, backbone, folder: Path, update, device) -> None:
    if device.type != "cuda" or importlib.util.find_spec("xformers") is None:
        run.out["skipped"]["xformers"] = "xformers is not installed" if device.type == "cuda" else "not on a GPU"
        run.save()
        return
    try:
        pipe = pipeline_of(backbone, folder)
        pipe.enable_xformers_memory_efficient_attention()  # the backbone's modules: both use it
    except Exception as err:  # noqa: BLE001 - an xformers build that does not fit this torch
        run.out["skipped"]["xformers"] = f"could not be enabled: {err}"
        run.save()
        return
    try:
        rollout_vs_pipeline(run, config, backbone, folder, device, label="rollout_xformers")
        times: dict[str, float] = {}
        run.record("seconds_per_update_xformers", times)
        for name, make in TARGET_PAIR.items():
            if run.fits(f"xformers {name}", 1.3 * run.cost["update"]):
                times[name], _ = timed(update(make(config)), device)
                run.save()
    finally:
        pipe.disable_xformers_memory_efficient_attention()


# --------------------------------------------------------------------------- driver


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for a run without a GPU."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()}"
    return f"cpu: {platform.processor() or platform.machine()}"


def targets(report: dict) -> dict:
    """Each target, pass/fail per model (None: not measured, e.g. skipped for time)."""
    errors = {}
    for key, m in report["models"].items():
        if "peak" in m:
            errors[key] = m["peak"]["error"]
        for label, p in m.get("plans", {}).items():
            if "error" in p:
                errors[f"{key} {label}"] = p["error"]
    limit = TARGETS["prediction_error_max"]
    out: dict[str, Any] = {
        "predictions_within_15pct": {"errors": errors, "met": {k: abs(e) <= limit for k, e in errors.items()}}
    }
    # the 24 GiB plan's whole use (weights, LoRA, AdamW state and the update) within its budget:
    # 24 GiB on a GPU, the tiny stand-in's budget with --tiny; a plan that does not fit fails
    ad = report["models"].get("animatediff", {}).get("plans", {}).get("24GiB")
    out["animatediff_rlr_within_24GiB"] = {
        "budget": None if ad is None or "plan" not in ad else ad["plan"]["budget"],
        "measured_total": None if ad is None else ad.get("measured_total"),
        "met": None if ad is None else ad.get("within_budget", False),
    }
    out["rlr_h2_over_truncated_bp_le_1.5"] = {
        k: m.get("rlr_h2_over_truncated_bp", {}).get("met") for k, m in report["models"].items()
    }
    out["rollout_ge_0.95"] = {k: m.get("rollout", {}).get("met") for k, m in report["models"].items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    keys = [m.key for m in MODELS]
    parser.add_argument("--models", nargs="*", default=keys, choices=keys)
    parser.add_argument("--steps", type=int, default=10, help="chain steps of every model (default 10)")
    parser.add_argument("--reps", type=int, default=2, help="rollout repetitions (time permitting)")
    parser.add_argument("--budget", default="auto", help="the plan's memory budget (default auto: this card)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole run (default 420)")
    parser.add_argument("--tiny", action="store_true", help="tiny stand-ins of the same classes (the CPU test)")
    parser.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(1)
        if args.budget == "auto":
            args.budget = "1GiB"
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    clock = Clock(args.budget_s)

    def log(line: str) -> None:
        print(f"[{args.budget_s - clock.left():6.1f}s] {line}", flush=True)

    report: dict[str, Any] = {
        "card": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "card_memory": torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None,
        "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "tiny": args.tiny,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "steps": args.steps,
        "budget": args.budget,
        "reward": f"aesthetic: LAION MLP head on open_clip {TINY_TOWER if args.tiny else 'ViT-L-14'}, random weights",
        "targets": TARGETS,
        "models": {},
    }

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        tmp.replace(args.out)

    chosen = [m for m in MODELS if m.key in args.models]
    for i, spec in enumerate(chosen):
        from rlr_video.backbones.family import families

        later = [m for m in chosen[i + 1 :] if m.family in families()]
        share = spec.share if later else 1.0
        run_model(spec, args, device, Clock(max(0.0, share * clock.left())), report, save, log)
    report["targets_met"] = targets(report)
    report["seconds"] = args.budget_s - clock.left()
    save()
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
