"""Tiny random-weight text-to-video pipelines built from the real diffusers classes.

Each ``build_tiny_*`` function builds a whole pipeline of one family (tokenizer, text
encoder, VAE, denoiser, scheduler) a few thousand parameters large, saves it with
``save_pretrained`` exactly as a hub repository is laid out, and returns the directory.
Tokenizers are built from in-memory vocabularies so nothing is downloaded.

Used by the backbone tests and reusable by anyone who needs a tiny real-class model::

    from backbone_fixtures import build_tiny_modelscope   # tests/ is on sys.path under pytest
    path = build_tiny_modelscope(tmp_path / "ms")
    backbone = load_backbone(path, num_steps=4, height=16, width=16, num_frames=4)

The sizes chosen here (``TINY_VIDEO``) fit every family's constraints (AnimateDiff needs
height % 8 == 0, CogVideoX and Wan need 4k + 1 frames, LTX-Video 8k + 1 and LTXPipeline
multiples of 32); pass them to ``load_backbone``.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import string
import tempfile
from pathlib import Path

import torch
from tolerances import layers, network_rtol

# Video sizes each tiny family is meant to run at (pixel height, width, frames).
TINY_VIDEO = {
    "animatediff": {"height": 16, "width": 16, "num_frames": 4},
    "modelscope": {"height": 16, "width": 16, "num_frames": 4},
    "modelscope_pixel": {"height": 8, "width": 8, "num_frames": 4},
    "modelscope_pixel_vae": {"height": 8, "width": 8, "num_frames": 4},
    "cogvideox": {"height": 32, "width": 32, "num_frames": 9},
    "wan": {"height": 32, "width": 32, "num_frames": 5},
    "wan22-ti2v": {"height": 32, "width": 64, "num_frames": 5},  # multiples of 32 (16 per latent, 2x2 patches)
    "wan22-a14b": {"height": 32, "width": 32, "num_frames": 5},
    "ltx": {"height": 32, "width": 64, "num_frames": 9},
    "ltx090": {"height": 32, "width": 64, "num_frames": 9},
    "hunyuanvideo15": {"height": 32, "width": 32, "num_frames": 5},
    "hunyuanvideo": {"height": 32, "width": 32, "num_frames": 5},
}
# LTX-Video options that differ from LTXPipeline's defaults, so the tests see them matter: a
# timestep-conditioned decoder's timestep and noise (LTX's recommended 0.05 / 0.025), a frame rate
# other than 25 (it scales the rotary embedding).
LTX_OPTIONS = {
    "ltx": {"frame_rate": 24, "decode_timestep": 0.05, "decode_noise_scale": 0.025},
    "ltx090": {"frame_rate": 24},
}

# Whole-word tokens of the tiny tokenizers; any other text falls back to letters.
WORDS = [
    "a",
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "moving",
    "left",
    "right",
    "up",
    "down",
    "still",
    "on",
    "the",
    "background",
    "cat",
    "dog",
    "blurry",
    "ugly",
]
CLIP_MAX_LENGTH = 16
T5_MAX_LENGTH = 12


def tiny_clip_tokenizer():
    """A byte-pair ``CLIPTokenizer`` over the letters, with merges that build ``WORDS``."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:  # merge left to right: ((r e) d</w>) -> red</w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            if (pieces[0], pieces[1]) not in merges:
                merges.append((pieces[0], pieces[1]))
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)


def tiny_clip_text_encoder(vocab_size: int, hidden: int = 16):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=2,
        num_hidden_layers=1,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config).eval()


def tiny_t5_tokenizer():
    """A sentencepiece-style ``T5Tokenizer`` (unigram) over a few words and the letters."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in string.ascii_lowercase]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def _t5_config(cls, vocab_size: int, d_model: int):
    return cls(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def tiny_vae_2d(latent_channels: int = 4):
    """A 2D ``AutoencoderKL`` with a spatial factor of 2."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=16,
    ).eval()


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def _save(pipe, directory: str | Path) -> Path:
    directory = Path(directory)
    pipe.save_pretrained(directory)
    return directory


def _tiny_sd_parts(seed: int):
    """The components of a tiny SD-1.5-like image model plus a MotionAdapter for it."""
    from diffusers import DDIMScheduler, MotionAdapter, UNet2DConditionModel

    _seeded(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = tiny_clip_text_encoder(len(tokenizer))
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    adapter = MotionAdapter(
        block_out_channels=(8, 16),
        motion_layers_per_block=1,
        motion_norm_num_groups=4,
        motion_num_attention_heads=2,
        motion_max_seq_length=32,
    )
    # The scheduler AnimateDiff recommends (linear betas, linspace spacing, steps_offset 1).
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False, timestep_spacing="linspace", steps_offset=1)
    parts = dict(vae=tiny_vae_2d(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    return parts, adapter


def tiny_animatediff_pipeline(seed: int = 0):
    """An ``AnimateDiffPipeline`` (UNetMotionModel from a tiny SD UNet + MotionAdapter)."""
    from diffusers import AnimateDiffPipeline

    parts, adapter = _tiny_sd_parts(seed)
    return AnimateDiffPipeline(**parts, motion_adapter=adapter, feature_extractor=None, image_encoder=None)


def build_tiny_sd_base_and_motion_adapter(directory: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Save the tiny SD base (StableDiffusionPipeline layout) to ``directory/base`` and its
    MotionAdapter to ``directory/motion_adapter``: the two halves ``build_tiny_animatediff``
    combines (same seed, same weights), as users combine an SD-1.5 base with
    ``guoyww/animatediff-motion-adapter-v1-5-2``."""
    from diffusers import StableDiffusionPipeline

    parts, adapter = _tiny_sd_parts(seed)
    base = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    directory = Path(directory)
    _save(base, directory / "base")
    adapter.save_pretrained(directory / "motion_adapter")
    return directory / "base", directory / "motion_adapter"


def build_tiny_animatediff(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny AnimateDiff pipeline to ``directory`` (the AnimateDiffPipeline layout)."""
    return _save(tiny_animatediff_pipeline(seed), directory)


def tiny_modelscope_pipeline(seed: int = 0, pixel_space: bool | str = False):
    """A ``TextToVideoSDPipeline`` around a tiny ``UNet3DConditionModel``.

    With ``pixel_space`` the UNet denoises RGB directly (3 channels) and there is no VAE;
    with ``pixel_space="vae"`` the VAE is a one-block ``AutoencoderKL`` (spatial factor 1,
    3 latent channels, scaling factor 1), the layout of the packaged ``tiny-shapes`` model
    (whose one-block VAE is built to be the identity).
    """
    from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

    _seeded(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = tiny_clip_text_encoder(len(tokenizer))
    channels = 3 if pixel_space else 4
    unet = UNet3DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    # ModelScope's own scheduler config. steps_offset 1 matters: with 0 the last DDIM step
    # goes from alpha_0 to alpha_0 (set_alpha_to_one is off), an identity that ignores the
    # model, so a gradient through it is rounding noise.
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    vae = None if pixel_space else tiny_vae_2d()
    if pixel_space == "vae":
        from diffusers import AutoencoderKL

        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",),
            block_out_channels=(6,),
            latent_channels=3,
            layers_per_block=1,
            norm_num_groups=3,
            sample_size=8,
            scaling_factor=1.0,
        ).eval()
    return TextToVideoSDPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def build_tiny_modelscope(directory: str | Path, seed: int = 0, pixel_space: bool | str = False) -> Path:
    """Save a tiny ModelScope/Zeroscope pipeline (TextToVideoSDPipeline layout)."""
    return _save(tiny_modelscope_pipeline(seed, pixel_space), directory)


def tiny_cogvideox_pipeline(seed: int = 0):
    """A ``CogVideoXPipeline`` with ``CogVideoXDDIMScheduler`` (v-prediction, SNR-shifted,
    zero terminal SNR, trailing spacing: the CogVideoX-2b scheduler config)."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    _seeded(seed)
    tokenizer = tiny_t5_tokenizer()
    text_encoder = T5EncoderModel(_t5_config(T5Config, len(tokenizer), 32)).eval()
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=4,
        text_embed_dim=32,
        num_layers=1,
        sample_width=4,
        sample_height=4,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=T5_MAX_LENGTH,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    ).eval()
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=3.0,
        timestep_spacing="trailing",
    )
    return CogVideoXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def build_tiny_cogvideox(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny CogVideoX pipeline (CogVideoXPipeline layout)."""
    return _save(tiny_cogvideox_pipeline(seed), directory)


def tiny_wan_transformer(channels: int = 16):
    """A one-block ``WanTransformer3DModel``: Wan's patches (1, 2, 2), RMS q/k norm across heads
    and cross-attention norm, 2 heads of 8 and a 32-wide text input (the published models: 12 to
    40 heads of 128, 30 or 40 blocks, UMT5-XXL's 4096)."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=channels,
        out_channels=channels,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def _umt5():
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    return tokenizer, UMT5EncoderModel(_t5_config(UMT5Config, len(tokenizer), 32)).eval()


def tiny_wan21_vae():
    """The Wan 2.1 VAE (also Wan 2.2 A14B's), tiny: z_dim 16, 8 pixels and 4 frames per latent, the
    class's published latent means and standard deviations (its defaults)."""
    from diffusers import AutoencoderKLWan

    # base_dim 8, not less: the decoder halves its channels when it upsamples, and base_dim 3
    # left a one-channel RMS norm (x / |x|), whose gradient is zero in exact arithmetic and float32
    # noise of size eps / |x| otherwise: gradient comparisons measured that noise (1.5e-4 of the
    # gradient with oneDNN limited to AVX2, 1e-5 without; 4e-6 either way at base_dim 8).
    return AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()


def tiny_wan_pipeline(seed: int = 0, shift: float = 3.0):
    """A ``WanPipeline`` (Wan 2.1 text-to-video) with ``FlowMatchEulerDiscreteScheduler``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    _seeded(seed)
    tokenizer, text_encoder = _umt5()
    transformer = tiny_wan_transformer()
    vae = tiny_wan21_vae()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


# The Wan 2.2 VAE's published latent statistics (48 channels): huggingface/diffusers
# scripts/convert_wan_to_diffusers.py, vae22_diffusers_config.
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


def tiny_wan22_vae():
    """The Wan 2.2 VAE scaled down. Published (diffusers ``scripts/convert_wan_to_diffusers.py``,
    ``vae22_diffusers_config``, for Wan-AI/Wan2.2-TI2V-5B): base_dim 160, decoder_base_dim 256,
    z_dim 48, dim_mult [1, 2, 4, 4], 2 residual blocks, temporal downsampling
    [False, True, True], ``is_residual`` (residual up/down blocks), in/out channels 12 with
    ``patch_size`` 2 (2x2 pixels folded into channels), scale factors 4 (time) and 16 (space), the
    48 latent means and stds above (its ``clip_output: false`` is no argument of diffusers 0.42's
    class). Here: base_dim 4, decoder_base_dim 6, dim_mult [1, 1, 1, 1], 1 residual block; the
    rest as published."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=4,
        decoder_base_dim=6,
        z_dim=48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
        latents_mean=WAN22_LATENTS_MEAN,
        latents_std=WAN22_LATENTS_STD,
    ).eval()


def tiny_wan22_ti2v_pipeline(seed: int = 0, shift: float = 5.0):
    """A Wan 2.2 TI2V-5B-layout ``WanPipeline`` (``expand_timesteps=True``, the 2.2 VAE).

    Published (diffusers ``scripts/convert_wan_to_diffusers.py``, ``Wan2.2-TI2V-5B``): transformer
    24 heads of 128, 30 blocks, ffn 14336, in/out channels 48, patches (1, 2, 2), text_dim 4096,
    freq_dim 256; ``UniPCMultistepScheduler`` with ``flow_shift`` 5.0 (here the flow-matching Euler
    scheduler with that shift); ``WanPipeline(..., expand_timesteps=True)``, no ``transformer_2``.
    Here: ``tiny_wan_transformer`` with 48 channels and ``tiny_wan22_vae``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    _seeded(seed)
    tokenizer, text_encoder = _umt5()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=tiny_wan22_vae(),
        transformer=tiny_wan_transformer(48),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        expand_timesteps=True,
    )


def tiny_wan22_a14b_pipeline(seed: int = 0, shift: float = 12.0, boundary_ratio: float = 0.875):
    """A Wan 2.2 A14B-layout ``WanPipeline``: two experts switched at ``boundary_ratio``.

    Published (diffusers ``scripts/convert_wan_to_diffusers.py``, ``Wan2.2-T2V-A14B``): two
    transformers of Wan 2.1 14B's shape (40 heads of 128, 40 blocks, ffn 13824, 16 channels,
    text_dim 4096), ``transformer`` from the release's ``high_noise_model``, ``transformer_2``
    from ``low_noise_model``; the Wan 2.1 VAE; ``UniPCMultistepScheduler`` with ``flow_shift`` 3.0;
    ``boundary_ratio`` 0.875. Wan's own config (Wan-Video/Wan2.2 ``wan/configs/wan_t2v_A14B.py``)
    samples with shift 12, boundary 0.875, guidance 4 (high noise) and 3 (low), 40 steps. Here:
    two ``tiny_wan_transformer`` experts (different random weights), ``tiny_wan21_vae`` and Wan's
    shift 12: with 4 steps the timesteps are 1000, 961, 861, 126, so the boundary 875 gives each
    expert two steps (with shift 3 the high-noise expert would get one)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    _seeded(seed)
    tokenizer, text_encoder = _umt5()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=tiny_wan21_vae(),
        transformer=tiny_wan_transformer(),
        transformer_2=tiny_wan_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        boundary_ratio=boundary_ratio,
    )


def build_tiny_wan(directory: str | Path, seed: int = 0, shift: float = 3.0) -> Path:
    """Save a tiny Wan 2.1 pipeline (WanPipeline layout)."""
    return _save(tiny_wan_pipeline(seed, shift), directory)


def build_tiny_wan22_ti2v(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny Wan 2.2 TI2V-5B-layout pipeline."""
    return _save(tiny_wan22_ti2v_pipeline(seed), directory)


def build_tiny_wan22_a14b(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny Wan 2.2 A14B-layout pipeline (two experts)."""
    return _save(tiny_wan22_a14b_pipeline(seed), directory)


def _ltx_vae(decoder: str):
    """A tiny ``AutoencoderKLLTXVideo``: spatial factor 16 (patch 2 x three 2x stages; the published
    VAEs have patch 4, factor 32) and temporal factor 8 (as published), 8 latent channels.

    ``decoder="0.9.0"``: the 0.9.0 layout (``LTXVideoDownBlock3D`` x 4, spatio-temporal scaling
    (T, T, T, F) in encoder and decoder, no timestep conditioning). ``"0.9.5"``: the 0.9.5 layout
    (``LTXVideo095DownBlock3D`` with downsample types spatial, temporal, spatiotemporal x 2;
    a three-stage decoder with residual upsamplers of factor 2, timestep-conditioned, no
    injected noise; explicit compression ratios). The published values this scales down are
    ``huggingface/diffusers`` ``scripts/convert_ltx_to_diffusers.py`` ``get_vae_config``: 0.9.0
    block_out_channels (128, 256, 512, 512), layers_per_block (4, 3, 3, 3, 4) in both halves;
    0.9.5 block_out_channels (128, 256, 512, 1024, 2048), layers_per_block (4, 6, 6, 2, 2),
    decoder_block_out_channels (256, 512, 1024), decoder_layers_per_block (5, 5, 5, 5),
    spatial_compression_ratio 32, temporal_compression_ratio 8; both latent_channels 128,
    patch_size 4, encoder_causal true, decoder_causal false, scaling_factor 1.0.
    """
    from diffusers import AutoencoderKLLTXVideo

    if decoder == "0.9.0":
        vae = AutoencoderKLLTXVideo(
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, True, False),
            decoder_spatio_temporal_scaling=(True, True, True, False),
            decoder_inject_noise=(False,) * 5,
            upsample_residual=(False,) * 4,
            upsample_factor=(1,) * 4,
            timestep_conditioning=False,
            patch_size=2,
            encoder_causal=True,
            decoder_causal=False,
        )
    else:
        vae = AutoencoderKLLTXVideo(
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8, 8),
            down_block_types=("LTXVideo095DownBlock3D",) * 4,
            downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
            decoder_block_out_channels=(8, 16, 32),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, True, True),
            decoder_spatio_temporal_scaling=(True, True, True),
            decoder_inject_noise=(False,) * 4,
            upsample_residual=(True, True, True),
            upsample_factor=(2, 2, 2),
            timestep_conditioning=True,
            patch_size=2,
            encoder_causal=True,
            decoder_causal=False,
            spatial_compression_ratio=16,
            temporal_compression_ratio=8,
        )
    # Random latent statistics: the buffers the pipeline un-normalises with are stored weights.
    vae.latents_mean.copy_(torch.randn(8) * 0.5)
    vae.latents_std.copy_(torch.rand(8) + 0.5)
    return vae.eval()


def tiny_ltx_pipeline(seed: int = 0, decoder: str = "0.9.5"):
    """An ``LTXPipeline`` with tiny random weights of the real classes.

    Scaled down from the published LTX-Video 0.9.x (2B) configs (read in ``huggingface/diffusers``
    ``scripts/convert_ltx_to_diffusers.py``, the hub could not be reached): the transformer's
    ``get_transformer_config`` (in/out channels 128, patch 1 x 1, 32 heads of 64, cross-attention
    2048, 28 layers, caption_channels 4096 = T5-XXL's width) becomes 8 channels, 2 heads of 8,
    one layer, a 32-wide T5; the VAE as ``_ltx_vae(decoder)`` says; the scheduler as the script
    saves it: for 0.9.0 ``FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True,
    base_shift=0.95, max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096,
    shift_terminal=0.1)``, for 0.9.5 ``FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False)``.
    The tokenizer's model_max_length of 128 (``TOKENIZER_MAX_LENGTH``) is ``T5_MAX_LENGTH`` here.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    _seeded(seed)
    tokenizer = tiny_t5_tokenizer()
    text_encoder = T5EncoderModel(_t5_config(T5Config, len(tokenizer), 32)).eval()
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,  # the transformer's width (heads x head size), as 2048 = 32 x 64
        num_layers=1,
        caption_channels=32,
    )
    vae = _ltx_vae(decoder)
    if decoder == "0.9.0":
        scheduler = FlowMatchEulerDiscreteScheduler(
            use_dynamic_shifting=True,
            base_shift=0.95,
            max_shift=2.05,
            base_image_seq_len=1024,
            max_image_seq_len=4096,
            shift_terminal=0.1,
        )
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False)
    return LTXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def build_tiny_ltx(directory: str | Path, seed: int = 0, decoder: str = "0.9.5") -> Path:
    """Save a tiny LTX-Video pipeline (LTXPipeline layout); ``decoder`` "0.9.5" or "0.9.0"."""
    return _save(tiny_ltx_pipeline(seed, decoder), directory)


# The published text templates (diffusers 0.42): HunyuanVideo 1.5 crops its Qwen2.5-VL chat
# template's first 108 tokens, HunyuanVideo 1.0 its Llama template's first 95. The tiny tokenizers
# below hold a whole-word vocabulary of those templates, built so that the template takes exactly
# as many tokens as the real tokenizers give it: the crop then starts at the prompt, as it does
# for the real models (``tests/test_hunyuan.py`` checks it).
QWEN_CHAT_TEMPLATE = (  # the text-only branch of Qwen2-VL / Qwen2.5-VL's chat template
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Llama 3's pre-tokenizer split (its tokenizer.json): words with their leading space, digits in
# threes, punctuation runs, newlines.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
HUNYUAN_TEXT_LENGTH = 16  # prompt tokens after the template crop (the pipelines' 1000 and 256, scaled down)


def _whole_word_merges(pieces: list[str], vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    """Merges that make each pre-tokenized piece one token (left to right), added to ``vocab``."""
    for piece in pieces:
        parts = list(piece)
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            parts = [pair[0] + pair[1], *parts[2:]]


def tiny_qwen_tokenizer():
    """A byte-level BPE ``Qwen2Tokenizer`` with whole-word merges for HunyuanVideo 1.5's system
    message and ``WORDS``, and Qwen's chat template. Runs of eight spaces (the system message has
    five, from its source's line continuations) are one token as in Qwen's vocabulary, so the
    template takes the 108 tokens the pipeline crops."""
    import inspect

    from diffusers import HunyuanVideo15Pipeline
    from tokenizers import Regex, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    system = inspect.signature(HunyuanVideo15Pipeline._get_mllm_prompt_embeds).parameters["system_message"].default
    split = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    vocab = {"<|endoftext|>": 0}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    space = "\u0120"  # the byte-level space
    merges = [(space, space), (space * 2, space * 2), (space * 4, space * 4)]
    for pair in merges:
        vocab.setdefault("".join(pair), len(vocab))
    texts = [system, "system", "user", "assistant", " ".join(WORDS)]
    _whole_word_merges([p for t in texts for p, _ in split.pre_tokenize_str(t) if space * 2 not in p], vocab, merges)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, padding_side="right", model_max_length=32768)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def tiny_llama_tokenizer():
    """A ``LlamaTokenizerFast`` (transformers 5: ``LlamaTokenizer``) with whole-word merges for
    HunyuanVideo 1.0's prompt template and ``WORDS`` and Llama 3's header tokens; the template
    takes the 95 tokens the pipeline crops (with the begin-of-text token)."""
    import re

    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers import Regex, pre_tokenizers
    from transformers import LlamaTokenizerFast

    specials = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    vocab = {"<unk>": 0, "<|begin_of_text|>": 1, "<|end_of_text|>": 2}
    for i in range(256):  # byte fallback
        vocab[f"<0x{i:02X}>"] = len(vocab)
    text = DEFAULT_PROMPT_TEMPLATE["template"].replace("{}", " ".join(WORDS))
    split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False)
    pieces = []
    for segment in re.split("|".join(re.escape(t) for t in specials), text):
        pieces += [p.replace(" ", "\u2581") for p, _ in split.pre_tokenize_str(segment)]
    for piece in pieces:
        for ch in piece:
            vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    _whole_word_merges(pieces, vocab, merges)
    tokenizer = LlamaTokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
        padding_side="right",
        add_bos_token=True,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


def tiny_hunyuanvideo15_pipeline(seed: int = 0, guidance_scale: float = 6.0, shift: float = 5.0):
    """A ``HunyuanVideo15Pipeline`` (text-to-video) of the published layout, scaled down.

    The published ``hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v`` (values from
    ``huggingface/diffusers`` ``scripts/convert_hunyuan_video1_5_to_diffusers.py``, ``480p_t2v``):
    ``HunyuanVideo15Transformer3DModel`` with 16 heads of 128, 54 double-stream blocks, 2 refiner
    blocks, patch 1, ``in_channels`` 65 (latents, the zero image latents and the mask), text widths
    3584 (Qwen2.5-VL-7B) and 1472 (byT5-small), image width 1152, RoPE axes (16, 56, 56); the
    ``AutoencoderKLHunyuanVideo15`` defaults (32 latent channels, blocks (128, 256, 512, 1024,
    1024), spatial factor 16, temporal 4); ``FlowMatchEulerDiscreteScheduler(shift=5.0)``;
    ``ClassifierFreeGuidance(guidance_scale=6.0)``; Qwen2.5-VL-7B-Instruct's language model
    (``Qwen2_5_VLTextModel``) and byT5-small's encoder with the Glyph tokens. Here: 2 heads of 8,
    2 blocks, 1 refiner block, 4 latent channels, VAE blocks of 8 channels (the same 5 levels:
    spatial factor 16, temporal 4), a 3-layer Qwen2.5-VL text model 16 wide, a 1-layer byT5
    encoder 16 wide, image width 8.
    """
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    _seeded(seed)
    tokenizer = tiny_qwen_tokenizer()
    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=3,  # the pipeline reads hidden_states[-3]: two layers below the top
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            rope_scaling={"rope_type": "default", "mrope_section": [1, 1, 2]},  # sums to head_dim / 2
            bos_token_id=None,
            eos_token_id=0,
            pad_token_id=0,
        )
    ).eval()
    tokenizer_2 = ByT5Tokenizer()
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
        )
    ).eval()
    latent = 4
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=2 * latent + 1,
        out_channels=latent,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        text_embed_dim=16,
        text_embed_2_dim=16,
        image_embed_dim=8,
        rope_axes_dim=(2, 2, 4),
        target_size=32,
        task_type="t2v",
    )
    vae = AutoencoderKLHunyuanVideo15(latent_channels=latent, block_out_channels=(8,) * 5, layers_per_block=1).eval()
    return HunyuanVideo15Pipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        guider=ClassifierFreeGuidance(guidance_scale=guidance_scale),
    )


def build_tiny_hunyuanvideo15(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny HunyuanVideo 1.5 pipeline (HunyuanVideo15Pipeline layout)."""
    return _save(tiny_hunyuanvideo15_pipeline(seed), directory)


def tiny_hunyuanvideo_pipeline(seed: int = 0, shift: float = 7.0):
    """A ``HunyuanVideoPipeline`` (HunyuanVideo 1.0, text-to-video) of the published layout, scaled down.

    The published ``hunyuanvideo-community/HunyuanVideo`` (``huggingface/diffusers``
    ``scripts/convert_hunyuan_video_to_diffusers.py``): the ``HunyuanVideoTransformer3DModel``
    defaults (24 heads of 128, 20 double- and 40 single-stream blocks, 2 refiner blocks, patch 2,
    guidance embedding, text width 4096, pooled width 768, RoPE axes (16, 56, 56)), the
    ``AutoencoderKLHunyuanVideo`` defaults (16 latent channels, blocks (128, 256, 512, 512),
    spatial factor 8, temporal 4), ``FlowMatchEulerDiscreteScheduler(shift=7.0)``, the language
    model of llava-llama-3-8b (``LlamaModel``: 32 layers 4096 wide) and CLIP ViT-L/14's text
    model (12 layers 768 wide, 77 tokens). Here: 2 heads of 8, 1 double- and 1 single-stream
    block, 1 refiner block, 4 latent channels, VAE blocks of 8 channels (the same 4 levels:
    spatial factor 8, temporal 4), a 3-layer Llama 16 wide and a 1-layer CLIP text model 16 wide.
    """
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    _seeded(seed)
    tokenizer = tiny_llama_tokenizer()
    text_encoder = LlamaModel(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=3,  # the pipeline reads hidden_states[-3]: two layers below the top
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
    ).eval()
    tokenizer_2 = tiny_clip_tokenizer()
    tokenizer_2.model_max_length = 77  # the pipeline's CLIP length
    text_encoder_2 = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer_2),
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=77,
            projection_dim=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    latent = 4
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=latent,
        out_channels=latent,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        text_embed_dim=16,
        pooled_projection_dim=16,
        rope_axes_dim=(2, 2, 4),
    )
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=latent, block_out_channels=(8,) * 4, layers_per_block=1, norm_num_groups=2
    ).eval()
    return HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


def build_tiny_hunyuanvideo(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny HunyuanVideo 1.0 pipeline (HunyuanVideoPipeline layout)."""
    return _save(tiny_hunyuanvideo_pipeline(seed), directory)


BUILDERS = {
    "animatediff": build_tiny_animatediff,
    "modelscope": build_tiny_modelscope,
    "modelscope_pixel": lambda directory, seed=0: build_tiny_modelscope(directory, seed, pixel_space=True),
    "modelscope_pixel_vae": lambda directory, seed=0: build_tiny_modelscope(directory, seed, pixel_space="vae"),
    "cogvideox": build_tiny_cogvideox,
    "wan": build_tiny_wan,
    "wan22-ti2v": build_tiny_wan22_ti2v,
    "wan22-a14b": build_tiny_wan22_a14b,
    "ltx": build_tiny_ltx,
    "ltx090": lambda directory, seed=0: build_tiny_ltx(directory, seed, decoder="0.9.0"),
    "hunyuanvideo15": build_tiny_hunyuanvideo15,
    "hunyuanvideo": build_tiny_hunyuanvideo,
}
FAMILIES = (
    "animatediff",
    "modelscope",
    "cogvideox",
    "wan",
    "wan22-ti2v",
    "wan22-a14b",
    "ltx",
    "hunyuanvideo15",
    "hunyuanvideo",
)
# The tiny models whose text encoder is T5 (their prompt length is the pipeline's max_sequence_length).
T5_FAMILIES = ("cogvideox", "wan", "wan22-ti2v", "wan22-a14b", "ltx", "ltx090")
_PIPELINES = {
    "animatediff": "AnimateDiffPipeline",
    "modelscope": "TextToVideoSDPipeline",
    "modelscope_pixel": "TextToVideoSDPipeline",
    "modelscope_pixel_vae": "TextToVideoSDPipeline",
    "cogvideox": "CogVideoXPipeline",
    "wan": "WanPipeline",
    "wan22-ti2v": "WanPipeline",
    "wan22-a14b": "WanPipeline",
    "ltx": "LTXPipeline",
    "ltx090": "LTXPipeline",
    "hunyuanvideo15": "HunyuanVideo15Pipeline",
    "hunyuanvideo": "HunyuanVideoPipeline",
}
_BUILT: dict[str, Path] = {}


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread for the duration (tiny models gain nothing from two, and on
    a shared 2-core machine two threads per process spin against other processes: the
    backbone tests ran ~9x slower with two threads under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_model_dir(name: str) -> Path:
    """The saved tiny model ``name`` (a ``BUILDERS`` key), built once per process into a
    temporary directory that is removed at exit. Treat it as read-only."""
    if name not in _BUILT:
        root = Path(tempfile.mkdtemp(prefix=f"rlr-tiny-{name}-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _BUILT[name] = BUILDERS[name](root / name)
    return _BUILT[name]


def tiny_options(name: str, **overrides) -> dict:
    """``load_backbone`` options for the tiny model ``name``: its video size, its text
    length, 4 steps, float32 on the CPU; ``overrides`` win."""
    options = dict(TINY_VIDEO[name], num_steps=4, **LTX_OPTIONS.get(name, {}))
    if name in T5_FAMILIES:
        options["max_sequence_length"] = T5_MAX_LENGTH
    if name in ("hunyuanvideo15", "hunyuanvideo"):
        options["max_sequence_length"] = HUNYUAN_TEXT_LENGTH
    options.update(overrides)
    return options


def chain_rtol(backbone) -> float:
    """A tolerance for a chain + decode computed in another arrangement (a relative L2 norm): the
    family's pipeline against our chain, or our chain on another batch.

    The pipelines make the same model calls as our chain, arranged otherwise (the CFG batch,
    the scheduler's formulas): float32 sums in another order through the text encoder,
    ``num_steps`` denoiser calls and the decoder, every layer counted as depth (2e-4 to 1.5e-3).
    Measured <= 6e-7 in the parity tests, also with AVX2 kernels; a guidance of 3 instead of 4
    moves the frames by 3e-3 to 4e-2 (8-30x the tolerance), a step more by 7e-3 to 0.4."""
    text, (denoiser, fan_in) = layers(backbone.prompt_encoder.text_encoder), layers(backbone.denoiser)
    decoder = layers(backbone.vae.decoder) if backbone.vae is not None else (0, 1)
    depth = text[0] + backbone.num_steps * denoiser + decoder[0]
    return network_rtol(depth, max(text[1], fan_in, decoder[1]))


def tiny_pipeline(name: str):
    """The family's own diffusers pipeline loaded from ``tiny_model_dir(name)``, set to the
    text length ``tiny_options`` asks for where that is no call argument."""
    import diffusers

    # A component saved as None (the pixel-space model's VAE) must be passed as None again.
    extra = {"vae": None} if name == "modelscope_pixel" else {}
    pipe = getattr(diffusers, _PIPELINES[name]).from_pretrained(tiny_model_dir(name), **extra)
    pipe.set_progress_bar_config(disable=True)
    if name == "hunyuanvideo15":
        # attributes of the pipeline, 1000 and 256 as published; the backbone's max_sequence_length bounds both
        pipe.tokenizer_max_length = pipe.tokenizer_2_max_length = HUNYUAN_TEXT_LENGTH
        pipe.vae.enable_slicing()  # diffusers 0.42.1's VAE cannot decode a batch of two videos
    return pipe


def pipeline_kwargs(name: str) -> dict:
    """Keyword arguments that make the family's pipeline generate what ``tiny_options`` asks."""
    kwargs = dict(TINY_VIDEO[name], **LTX_OPTIONS.get(name, {}))
    if name in T5_FAMILIES:
        kwargs["max_sequence_length"] = T5_MAX_LENGTH
    if name in LTX_OPTIONS:  # the decode noise: LTXPipeline draws it from its generator
        from rlr_video.backbones.families.ltx import DECODE_NOISE_SEED

        kwargs["generator"] = torch.Generator().manual_seed(DECODE_NOISE_SEED)
    if name == "hunyuanvideo":
        kwargs["max_sequence_length"] = HUNYUAN_TEXT_LENGTH
    return kwargs


def takes_negative_prompt(name: str) -> bool:
    """HunyuanVideo 1.0's guidance is a model input: no negative prompt."""
    return name != "hunyuanvideo"


def pipeline_guidance(name: str, pipe, guidance: float, negative_prompt: list[str] | None = None) -> dict:
    """Keyword arguments that make the family's pipeline guide as ``guidance_scale=guidance``
    (and ``negative_prompt``) does for the backbone: a call argument, the guider's scale
    (HunyuanVideo 1.5, set on ``pipe``) or the embedded guidance (HunyuanVideo 1.0)."""
    if name == "hunyuanvideo15":
        pipe.guider = pipe.guider.new(guidance_scale=guidance)
        kwargs = {}
    else:
        kwargs = {"guidance_scale": guidance}
    if negative_prompt is not None and takes_negative_prompt(name):
        kwargs["negative_prompt"] = negative_prompt
    return kwargs


def pipeline_latents(name: str, latents: torch.Tensor) -> torch.Tensor:
    """Our initial latents as the family's pipeline takes them: LTXPipeline packed tokens
    (B, F*h*w, C) (its ``_pack_latents`` at patch size 1), the others as they are."""
    if name in LTX_OPTIONS:
        return latents.flatten(2).transpose(1, 2).contiguous()
    return latents
