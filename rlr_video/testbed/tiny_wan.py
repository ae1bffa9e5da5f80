"""The tiny-shapes-wan text-to-video model: a diffusers ``WanPipeline`` on moving shapes.

The flow-matching twin of :mod:`rlr_video.testbed.tiny_model`: the same videos and captions,
in the Wan 2.1 layout that real 2026 video models use, so every estimator can be compared
on a DDIM chain (``tiny-shapes``) and on a flow-matching SDE chain (this one). Layout of
the shipped folder (``rlr_video/assets/tiny-shapes-wan/``), which
``WanPipeline.from_pretrained`` loads like a hub model:

* ``vae/``: an ``AutoencoderKLWan`` (Wan's causal 3D VAE: the first frame alone, then
  chunks of two) trained on the moving-shapes videos, 2x spatial and 2x temporal
  compression (``VAE_VARIANT``): 9 frames of 32 x 32 pixels are 5 latent frames of 16 x 16
  with 8 channels; its ``latents_mean`` / ``latents_std`` are measured on training videos;
* ``transformer/``: a small ``WanTransformer3DModel`` trained with flow matching on those
  latents (velocity ``eps - x0``, Wan's shifted sigmas); its 2 x 2 patches make tokens of
  ``TOKEN_PIXELS`` x ``TOKEN_PIXELS`` pixels, 320 per video;
* ``text_encoder/`` + ``tokenizer/``: the shapes text encoder of ``tiny-shapes`` (a tiny
  ``CLIPTextModel`` with CLIP's BPE trimmed to the captions' words), fine-tuned with the
  transformer. It fits ``WanPipeline``, which calls ``text_encoder(input_ids, mask)`` and
  reads ``last_hidden_state``: its attention is causal, so the mask changes nothing before
  the padding, and the pipeline zeroes the rest. It has ``MAX_SEQUENCE_LENGTH`` positions:
  call the pipeline with ``max_sequence_length=MAX_SEQUENCE_LENGTH``;
* ``scheduler/``: ``FlowMatchEulerDiscreteScheduler`` with Wan's ``shift`` (``FLOW_SHIFT``).

How the weights were made: ``tools/testbed/pretrain_tiny_shapes_wan.py`` (commands in the
folder's ``train_info.json``); how well they follow prompts: ``benchmarks/tiny_shapes_wan_eval.json``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rlr_video.testbed import tiny_model
from rlr_video.testbed.tiny_model import ASSETS_DIR, CONTEXT_LENGTH

TINY_SHAPES_WAN_DIR = ASSETS_DIR / "tiny-shapes-wan"

RESOLUTION = 32
NUM_FRAMES = 9  # the causal VAE encodes 1 + 2k frames (1 + 4k with the 4x variant)
MAX_SEQUENCE_LENGTH = CONTEXT_LENGTH  # the text encoder's positions (the longest caption is 14 tokens)
FLOW_SHIFT = 3.0  # Wan 2.1's flow_shift for its 480p models; sigma' = shift s / (1 + (shift - 1) s)
# Each transformer token covers TOKEN_PIXELS x TOKEN_PIXELS pixels (VAE scale x patch). With the 2x VAE,
# 8 (a 4 x 4 patch of 8 channels: 128 values into a 128-wide stream, where Wan 2.1 puts 64 into 1536)
# learnt colour but left shape and direction at chance after 3,800 steps of 64 videos (38 CPU min,
# docs/testbed-wan.md's run 1); 4 (patch 2, 32 values per token, 320 tokens) leaves the stream room,
# as Wan's patch does.
TOKEN_PIXELS = 4

# Two VAE variants were trained (tools/testbed/pretrain_tiny_shapes_wan.py --vae-variant): Wan 2.1's
# 4x spatial and 4x temporal compression, and 2x in both, whose decoder has less to invent.
VAE_VARIANTS: dict[str, dict] = {
    "s4t4": {
        "base_dim": 16,
        "z_dim": 16,  # as Wan 2.1's VAE
        "dim_mult": [1, 2, 4],  # two downsamplings: 32 -> 8 pixels
        "num_res_blocks": 1,
        "attn_scales": [],
        "temperal_downsample": [True, True],  # (sic, diffusers' spelling) two halvings in time: 1 + 4k -> 1 + k
        "scale_factor_temporal": 4,
        "scale_factor_spatial": 4,
    },
    "s2t2": {
        "base_dim": 16,
        "z_dim": 8,
        "dim_mult": [1, 2],  # one downsampling: 32 -> 16 pixels
        "num_res_blocks": 1,
        "attn_scales": [],
        "temperal_downsample": [True],  # one halving in time: 1 + 2k -> 1 + k (9 frames -> 5)
        "scale_factor_temporal": 2,
        "scale_factor_spatial": 2,
    },
}
VAE_VARIANT = "s2t2"  # the shipped one: with 4x compression shape and direction were not learnt (TOKEN_PIXELS)
VAE_CONFIG: dict = VAE_VARIANTS[VAE_VARIANT]

_PATCH = TOKEN_PIXELS // VAE_CONFIG["scale_factor_spatial"]
TRANSFORMER_CONFIG: dict = {
    "patch_size": (1, _PATCH, _PATCH),
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "in_channels": VAE_CONFIG["z_dim"],
    "out_channels": VAE_CONFIG["z_dim"],
    "text_dim": 64,  # the text encoder's width
    "freq_dim": 64,
    "ffn_dim": 512,
    "num_layers": 4,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 64,
}

SCHEDULER_CONFIG: dict = {"num_train_timesteps": 1000, "shift": FLOW_SHIFT}


def video_to_pixels(video: Tensor) -> Tensor:
    """Frames (B, F, 3, H, W) in [0, 1] -> the VAE's input (B, 3, F, H, W) in [-1, 1]."""
    return video.permute(0, 2, 1, 3, 4) * 2 - 1


def pixels_to_video(pixels: Tensor) -> Tensor:
    """The VAE's output (B, 3, F, H, W) in [-1, 1] -> frames (B, F, 3, H, W) in [0, 1]."""
    return ((pixels.permute(0, 2, 1, 3, 4) + 1) / 2).clamp(0, 1)


def latent_stats(vae) -> tuple[Tensor, Tensor]:
    """``latents_mean`` and ``latents_std`` of the VAE's config as (1, C, 1, 1, 1) tensors."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    return torch.tensor(vae.config.latents_mean).view(shape), torch.tensor(vae.config.latents_std).view(shape)


def normalise(vae, z: Tensor) -> Tensor:
    """VAE latents -> what the transformer sees: the inverse of ``WanPipeline``'s
    ``latents / (1 / latents_std) + latents_mean`` before decoding."""
    mean, std = latent_stats(vae)
    return (z - mean.to(z)) / std.to(z)


def build_vae(variant: str = VAE_VARIANT):
    """A fresh ``AutoencoderKLWan`` of one of ``VAE_VARIANTS``."""
    from diffusers import AutoencoderKLWan

    if variant not in VAE_VARIANTS:
        raise ValueError(f"unknown VAE variant {variant!r}; known: {', '.join(VAE_VARIANTS)}")
    config = VAE_VARIANTS[variant]
    z = config["z_dim"]  # the statistics are measured and written into the config when it is saved
    return AutoencoderKLWan(**config, latents_mean=[0.0] * z, latents_std=[1.0] * z)


def build_transformer(vae_config: dict | None = None):
    """A fresh ``WanTransformer3DModel`` of ``TRANSFORMER_CONFIG`` for a VAE's latents: its
    channels, and a patch that makes each token ``TOKEN_PIXELS`` pixels wide."""
    from diffusers import WanTransformer3DModel

    vae_config = vae_config or VAE_CONFIG
    patch = TOKEN_PIXELS // vae_config["scale_factor_spatial"]
    z = vae_config["z_dim"]
    return WanTransformer3DModel(
        **{**TRANSFORMER_CONFIG, "in_channels": z, "out_channels": z, "patch_size": (1, patch, patch)}
    )


def build_scheduler():
    """Wan's flow-matching Euler scheduler with ``FLOW_SHIFT``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def build_components(
    tokenizer_dir: str | Path, text_encoder: str | Path | None = None, seed: int = 0, vae_variant: str = VAE_VARIANT
) -> dict:
    """Fresh pipeline components: random VAE and transformer, tiny-shapes' tokenizer, and the
    ``CLIPTextModel`` saved at ``text_encoder`` (tiny-shapes' shapes text encoder, say), or a
    random one of tiny-shapes' config when None."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from rlr_video.testbed.tiny_model import TEXT_CONFIG, build_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(tokenizer_dir)
    if text_encoder is None:
        config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TEXT_CONFIG,
        )
        encoder = CLIPTextModel(config)
    else:
        encoder = CLIPTextModel.from_pretrained(text_encoder)
    if encoder.config.hidden_size != TRANSFORMER_CONFIG["text_dim"]:
        raise ValueError(
            f"{text_encoder}: text width {encoder.config.hidden_size}, the transformer reads "
            f"{TRANSFORMER_CONFIG['text_dim']}"
        )
    vae = build_vae(vae_variant)
    return {
        "tokenizer": tokenizer,
        "text_encoder": encoder,
        "transformer": build_transformer(dict(vae.config)),
        "vae": vae,
        "scheduler": build_scheduler(),
    }


def tokenize(tokenizer, prompts: list[str]) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask (B, MAX_SEQUENCE_LENGTH), as ``WanPipeline`` makes them."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    tokens = tokenizer(
        [prompt_clean(p) for p in prompts],
        padding="max_length",
        max_length=MAX_SEQUENCE_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    return tokens.input_ids, tokens.attention_mask


def encode_prompts(tokenizer, text_encoder, prompts: list[str], cache: dict | None = None) -> Tensor:
    """Text embeddings as ``WanPipeline._get_t5_prompt_embeds`` computes them: the masked
    encoder's last hidden state, zero past each prompt's tokens. ``cache`` memoises tokens."""
    if cache is None:
        ids, mask = tokenize(tokenizer, prompts)
    else:
        missing = [p for p in dict.fromkeys(prompts) if p not in cache]
        if missing:
            new_ids, new_mask = tokenize(tokenizer, missing)
            cache.update({p: (i, m) for p, i, m in zip(missing, new_ids, new_mask, strict=True)})
        ids = torch.stack([cache[p][0] for p in prompts])
        mask = torch.stack([cache[p][1] for p in prompts])
    device = text_encoder.device
    hidden = text_encoder(ids.to(device), mask.to(device)).last_hidden_state
    return hidden * mask.to(device).unsqueeze(-1).to(hidden.dtype)


def make_pipeline(components: dict):
    """A ``WanPipeline`` of the components (transformer, vae, text_encoder, tokenizer, scheduler)."""
    from diffusers import WanPipeline

    return WanPipeline(**{k: components[k] for k in ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")})


def load_pipeline(path: str | Path | None = None, device: str | torch.device = "cpu"):
    """Load the shipped (or any saved) tiny-shapes-wan folder with diffusers' own loader: a
    ``WanPipeline``, as its ``model_index.json`` says."""
    return tiny_model.load_pipeline(path or TINY_SHAPES_WAN_DIR, device)


@torch.no_grad()
def sample(
    pipe,
    prompts: list[str],
    num_inference_steps: int = 25,
    guidance_scale: float = 1.0,
    seed: int = 0,
    latents: Tensor | None = None,
    output_type: str = "pt",
) -> Tensor:
    """Sample videos (B, F, 3, H, W) in [0, 1] with ``WanPipeline`` (the Euler ODE), or with
    ``output_type="latent"`` the final latents (B, C, F', H', W') before decoding."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out = pipe(
        prompt=prompts,
        negative_prompt=[""] * len(prompts) if guidance_scale > 1 else None,
        height=RESOLUTION,
        width=RESOLUTION,
        num_frames=NUM_FRAMES,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        generator=generator,
        latents=latents,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        output_type=output_type,
    )
    return out.frames.float().cpu()
