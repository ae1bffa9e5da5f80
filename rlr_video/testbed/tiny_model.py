"""The tiny-shapes text-to-video model: a pixel-space diffusers ``TextToVideoSDPipeline``.

Layout of the shipped folder (``rlr_video/assets/tiny-shapes/``), a standard diffusers
text-to-video folder that ``TextToVideoSDPipeline.from_pretrained`` loads like a hub model:

* ``unet/``: ``UNet3DConditionModel`` (ModelScope/Zeroscope class) with 3 input and
  output channels, denoising *pixels* scaled to [-1, 1], v-prediction (the scheduler config says so);
* ``text_encoder/``: a tiny ``CLIPTextModel`` trained with the UNet;
* ``tokenizer/``: ``CLIPTokenizer`` with OpenAI CLIP's BPE trimmed to the captions'
  words (see :mod:`rlr_video.testbed.tokenizer`);
* ``scheduler/``: ``DDIMScheduler`` (DDPM linear betas, 1000 steps, x0 clipped to [-1, 1]);
* ``vae/``: an ``AutoencoderKL`` with one block (scale factor 1), 3 latent channels and
  ``scaling_factor`` 1, whose weights are set so that it is the identity (to ~1e-4,
  float32; see :func:`build_identity_vae`). The pipeline
  layout needs a VAE; the latents *are* the pixels, so ``decode`` is (nearly) a no-op.
  Code that trains the model through its decoder may call :func:`latents_to_video`
  instead, which is the exact identity this VAE approximates.

How the shipped weights were made (commands, devices, times, loss curve) is recorded in
``tiny-shapes/train_info.json``; their prompt-following, measured by the analytic scorer,
in ``benchmarks/tiny_shapes_eval.json`` (``tools/testbed/eval_tiny_shapes.py``).

Sample without classifier-free guidance (``GUIDANCE_SCALE``, what ``load_backbone`` takes
for this model): on 180 held-out videos all three attributes are right 95.6% of the time at
guidance 1, 71.7% at 1.5 and 52.8% at 2, and colour and shape wash out as it grows.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rlr_video.backbones.layout import PACKAGED_DEFAULTS
from rlr_video.verbosity import loading_bars_hidden

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
TINY_SHAPES_DIR = ASSETS_DIR / "tiny-shapes"

RESOLUTION = 16
NUM_FRAMES = 8
GUIDANCE_SCALE = PACKAGED_DEFAULTS["tiny-shapes"]["guidance_scale"]  # what load_backbone takes for it
CONTEXT_LENGTH = 16  # longest caption is 14 tokens with start/end
TEXT_WIDTH = 64

UNET_CONFIG: dict = {
    "sample_size": RESOLUTION,
    "in_channels": 3,
    "out_channels": 3,
    # No attention at full resolution: it costs most of the compute at 16x16 and the
    # caption only needs to set global properties (colour, shape, motion), which the
    # 8x8 and 4x4 cross-attention and the mid block carry.
    "down_block_types": ("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
    "up_block_types": ("CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"),
    "block_out_channels": (16, 32, 64),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": TEXT_WIDTH,
    "attention_head_dim": 4,  # UNet3D reads this as the number of heads
}

# The same widths in AnimateDiff's class (`tools/testbed/pretrain_tiny_shapes.py --unet motion`). Its
# motion modules carry sinusoidal frame positions, which UNet3D's temporal layers lack (they
# can only infer a frame's place from the temporal convolutions' zero padding). After 60 CPU
# minutes from scratch (62k videos) it beat the shipped UNet3D (284k videos) on shape (88% vs
# 47% under the word swap) but followed the direction word no better than chance
# (benchmarks/tiny_shapes_motion_word_swap.json).
MOTION_UNET_CONFIG: dict = {
    **{k: v for k, v in UNET_CONFIG.items() if not k.endswith("_types") and k != "attention_head_dim"},
    "down_block_types": ("DownBlockMotion", "CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion"),
    "up_block_types": ("CrossAttnUpBlockMotion", "CrossAttnUpBlockMotion", "UpBlockMotion"),
    "num_attention_heads": 4,
    "motion_max_seq_length": NUM_FRAMES,
    "motion_num_attention_heads": 4,
}
UNET_KINDS: tuple[str, ...] = ("unet3d", "motion")

TEXT_CONFIG: dict = {
    "hidden_size": TEXT_WIDTH,
    "intermediate_size": 4 * TEXT_WIDTH,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": CONTEXT_LENGTH,
}

VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",),
    "up_block_types": ("UpDecoderBlock2D",),
    "block_out_channels": (12,),  # one group of 4 channels per colour channel
    "layers_per_block": 1,
    "latent_channels": 3,
    "norm_num_groups": 3,
    "sample_size": RESOLUTION,
    "scaling_factor": 1.0,
    "force_upcast": False,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": False,
}

SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",  # DDPM's pixel-space schedule
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def video_to_latents(video: Tensor) -> Tensor:
    """Frames (B, F, 3, H, W) in [0, 1] -> UNet3D latents (B, 3, F, H, W) in [-1, 1]."""
    return video.permute(0, 2, 1, 3, 4) * 2 - 1


def latents_to_video(latents: Tensor) -> Tensor:
    """The exact inverse of :func:`video_to_latents` (what the shipped VAE approximates)."""
    return ((latents.permute(0, 2, 1, 3, 4) + 1) / 2).clamp(0, 1)


# Constants of the identity construction (see build_identity_vae).
_K = 2000.0  # large constant channel: makes GroupNorm statistics nearly input-independent
_SHIFT = 20.0  # SiLU(x) = x to ~1e-7 for x >= 19: the signal passes SiLU at x = z + 20
_LOGVAR = -20.0  # encoder posterior std e^-10: sampling is deterministic in practice


@torch.no_grad()
def _identity_head(conv_in, norm_out, conv_out, blocks, out_channels: int) -> None:
    """Set conv_in -> blocks -> GroupNorm -> SiLU -> conv_out to compute y = x.

    conv_in writes each input channel c into its own GroupNorm group as
    [x_c, -x_c, K, K]. The group mean is then exactly K/2 and the std
    sqrt(K^2/4 + mean(x_c^2)/2) = K/2 up to mean(x^2)/K^2, so the normalised x_c channel
    is 2 x_c / K - 1; the GroupNorm affine maps it to x_c + 20, where SiLU is the
    identity, and conv_out subtracts the 20. Every ResNet block is made the identity by
    zeroing its second convolution (they are residual: out = x + conv2(...)).
    Error: about mean(x^2) / (2K) + float32 rounding, ~1e-4 for x in [-1, 1].
    """
    channels = conv_in.out_channels
    for module in (conv_in, conv_out):
        module.weight.zero_()
        module.bias.zero_()
    norm_out.weight.zero_()
    norm_out.bias.zero_()
    for block in blocks:
        for resnet in getattr(block, "resnets", []):
            resnet.conv2.weight.zero_()
            resnet.conv2.bias.zero_()
    centre = conv_in.kernel_size[0] // 2
    for c in range(3):
        g = 4 * c  # first channel of group c
        conv_in.weight[g, c, centre, centre] = 1.0
        conv_in.weight[g + 1, c, centre, centre] = -1.0
        conv_in.bias[g + 2] = conv_in.bias[g + 3] = _K
        norm_out.weight[g] = _K / 2
        norm_out.bias[g] = _K / 2 + _SHIFT
        conv_out.weight[c, g, centre, centre] = 1.0
        conv_out.bias[c] = -_SHIFT
    assert channels == 12 and out_channels in (3, 6)


def build_identity_vae():
    """An ``AutoencoderKL`` whose encoder mean and decoder are the identity (to ~1e-4).

    Built by construction rather than trained: a GroupNorm/SiLU decoder learns the
    identity only approximately (a trained one was off by up to 0.49 on a few pixels
    after 400 steps), while the construction in ``_identity_head`` is exact up to
    float32 rounding. Use it in float32: the K = 2000 channels need float32's precision.
    """
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**VAE_CONFIG)
    enc, dec = vae.encoder, vae.decoder
    _identity_head(enc.conv_in, enc.conv_norm_out, enc.conv_out, [*enc.down_blocks, enc.mid_block], 6)
    with torch.no_grad():  # posterior log-variance: a constant, via conv_out's bias
        enc.conv_out.bias[3:6] = _LOGVAR
    _identity_head(dec.conv_in, dec.conv_norm_out, dec.conv_out, [dec.mid_block, *dec.up_blocks], 3)
    return vae.eval().requires_grad_(False)


def build_tokenizer(folder: str | Path):
    """Write the trimmed CLIP BPE into ``folder`` and return a ``CLIPTokenizer`` on it."""
    from transformers import CLIPTokenizer

    from rlr_video.testbed.shapes import vocabulary
    from rlr_video.testbed.tokenizer import EOT, write_clip_tokenizer_files

    vocab, merges = write_clip_tokenizer_files(vocabulary(), folder)
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=CONTEXT_LENGTH, pad_token=EOT)


def build_unet(kind: str = "unet3d"):
    """A fresh tiny-shapes denoiser: ``"unet3d"`` (the shipped class) or ``"motion"``."""
    from diffusers import UNet3DConditionModel, UNetMotionModel

    if kind == "unet3d":
        return UNet3DConditionModel(**UNET_CONFIG)
    if kind == "motion":
        return UNetMotionModel(**MOTION_UNET_CONFIG)
    raise ValueError(f"unknown UNet kind {kind!r}; use one of {', '.join(UNET_KINDS)}")


def build_components(
    tokenizer_dir: str | Path, seed: int = 0, unet: str = "unet3d", prediction_type: str = "epsilon"
) -> dict:
    """Fresh, randomly initialised pipeline components (what pretraining starts from)."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(tokenizer_dir)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TEXT_CONFIG,
    )
    return {
        "unet": build_unet(unet),
        "text_encoder": CLIPTextModel(text_config),
        "tokenizer": tokenizer,
        "vae": build_identity_vae(),
        "scheduler": DDIMScheduler(**{**SCHEDULER_CONFIG, "prediction_type": prediction_type}),
    }


def make_pipeline(components: dict):
    """The diffusers pipeline for the components' UNet: ``TextToVideoSDPipeline`` for UNet3D
    (ModelScope layout), ``AnimateDiffPipeline`` for ``UNetMotionModel``."""
    from diffusers import AnimateDiffPipeline, TextToVideoSDPipeline, UNetMotionModel

    parts = {k: components[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    if isinstance(parts["unet"], UNetMotionModel):
        return AnimateDiffPipeline(**parts, motion_adapter=None)
    return TextToVideoSDPipeline(**parts)


def denoise(unet, latents: Tensor, t: Tensor, text_embeds: Tensor) -> Tensor:
    """The denoiser's output on (B, C, F, H, W) latents, as the model's pipeline calls it
    (``UNetMotionModel`` takes the text once per frame)."""
    from diffusers import UNetMotionModel

    if isinstance(unet, UNetMotionModel):
        text_embeds = text_embeds.repeat_interleave(latents.shape[2], dim=0)
    return unet(latents, t, encoder_hidden_states=text_embeds).sample


def training_target(scheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """What the denoiser learns to output for ``x_t = add_noise(x0, noise, t)``: the noise
    or the velocity, as the scheduler's ``prediction_type`` says its sampler will read it."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"prediction_type {kind!r}: the tiny-shapes tools train 'epsilon' or 'v_prediction'")


def tokenize(tokenizer, prompts: list[str]) -> Tensor:
    """Token ids (B, model_max_length) exactly as ``TextToVideoSDPipeline`` makes them."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def encode_prompts(tokenizer, text_encoder, prompts: list[str], cache: dict | None = None):
    """Text embeddings exactly as ``TextToVideoSDPipeline`` computes them.

    Padded to ``model_max_length`` and no attention mask: the pipeline passes none
    (the config has no ``use_attention_mask``), and training must see what sampling sees.
    ``cache`` (a dict) memoises token ids per prompt: training repeats few captions.
    """
    if cache is None:
        ids = tokenize(tokenizer, prompts)
    else:
        missing = [p for p in dict.fromkeys(prompts) if p not in cache]
        if missing:
            cache.update(zip(missing, tokenize(tokenizer, missing), strict=True))
        ids = torch.stack([cache[p] for p in prompts])
    return text_encoder(ids.to(text_encoder.device))[0]


def load_pipeline(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """Load the shipped (or any saved) tiny-shapes folder with diffusers' own loader
    (its ``model_index.json`` names the pipeline class)."""
    from diffusers import DiffusionPipeline

    with loading_bars_hidden():
        pipe = DiffusionPipeline.from_pretrained(str(path or TINY_SHAPES_DIR))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@torch.no_grad()
def sample(
    pipe,
    prompts: list[str],
    num_inference_steps: int = 25,
    guidance_scale: float = 2.0,
    seed: int = 0,
    eta: float = 0.0,
    same_noise: bool = False,
) -> Tensor:
    """Sample videos (B, F, 3, H, W) in [0, 1] through the folder's pipeline.

    ``same_noise`` starts every video from the same noise, so that with ``eta`` 0 the
    prompts are the only difference between them.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    cfg = pipe.unet.config
    latents = None
    if same_noise:
        shape = (1, cfg.in_channels, NUM_FRAMES, cfg.sample_size, cfg.sample_size)
        latents = torch.randn(shape, generator=generator).expand(len(prompts), -1, -1, -1, -1).contiguous()
    out = pipe(
        prompt=prompts,
        num_frames=NUM_FRAMES,
        height=cfg.sample_size,
        width=cfg.sample_size,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        eta=eta,
        generator=generator,
        latents=None if latents is None else latents.to(pipe.device),
        output_type="pt",
    )
    return out.frames.float().cpu()
