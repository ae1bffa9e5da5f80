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

# Video sizes each tiny family is meant to run at (pixel height, width, frames).
TINY_VIDEO = {
    "animatediff": {"height": 16, "width": 16, "num_frames": 4},
    "modelscope": {"height": 16, "width": 16, "num_frames": 4},
    "modelscope_pixel": {"height": 8, "width": 8, "num_frames": 4},
    "modelscope_pixel_vae": {"height": 8, "width": 8, "num_frames": 4},
    "cogvideox": {"height": 32, "width": 32, "num_frames": 9},
    "wan": {"height": 32, "width": 32, "num_frames": 5},
    "ltx": {"height": 32, "width": 64, "num_frames": 9},
    "ltx090": {"height": 32, "width": 64, "num_frames": 9},
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


def tiny_wan_pipeline(seed: int = 0, shift: float = 3.0):
    """A ``WanPipeline`` (Wan 2.1 text-to-video) with ``FlowMatchEulerDiscreteScheduler``."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    _seeded(seed)
    tokenizer = tiny_t5_tokenizer()
    text_encoder = UMT5EncoderModel(_t5_config(UMT5Config, len(tokenizer), 32)).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def build_tiny_wan(directory: str | Path, seed: int = 0, shift: float = 3.0) -> Path:
    """Save a tiny Wan 2.1 pipeline (WanPipeline layout)."""
    return _save(tiny_wan_pipeline(seed, shift), directory)


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


BUILDERS = {
    "animatediff": build_tiny_animatediff,
    "modelscope": build_tiny_modelscope,
    "modelscope_pixel": lambda directory, seed=0: build_tiny_modelscope(directory, seed, pixel_space=True),
    "modelscope_pixel_vae": lambda directory, seed=0: build_tiny_modelscope(directory, seed, pixel_space="vae"),
    "cogvideox": build_tiny_cogvideox,
    "wan": build_tiny_wan,
    "ltx": build_tiny_ltx,
    "ltx090": lambda directory, seed=0: build_tiny_ltx(directory, seed, decoder="0.9.0"),
}
FAMILIES = ("animatediff", "modelscope", "cogvideox", "wan", "ltx")
_PIPELINES = {
    "animatediff": "AnimateDiffPipeline",
    "modelscope": "TextToVideoSDPipeline",
    "modelscope_pixel": "TextToVideoSDPipeline",
    "modelscope_pixel_vae": "TextToVideoSDPipeline",
    "cogvideox": "CogVideoXPipeline",
    "wan": "WanPipeline",
    "ltx": "LTXPipeline",
    "ltx090": "LTXPipeline",
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
    if name in ("cogvideox", "wan", "ltx", "ltx090"):
        options["max_sequence_length"] = T5_MAX_LENGTH
    options.update(overrides)
    return options


def tiny_pipeline(name: str):
    """The family's own diffusers pipeline loaded from ``tiny_model_dir(name)``."""
    import diffusers

    # A component saved as None (the pixel-space model's VAE) must be passed as None again.
    extra = {"vae": None} if name == "modelscope_pixel" else {}
    pipe = getattr(diffusers, _PIPELINES[name]).from_pretrained(tiny_model_dir(name), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_kwargs(name: str) -> dict:
    """Keyword arguments that make the family's pipeline generate what ``tiny_options`` asks."""
    kwargs = dict(TINY_VIDEO[name], **LTX_OPTIONS.get(name, {}))
    if name in ("cogvideox", "wan", "ltx", "ltx090"):
        kwargs["max_sequence_length"] = T5_MAX_LENGTH
    if name in LTX_OPTIONS:  # the decode noise: LTXPipeline draws it from its generator
        from rlr_video.backbones.families.ltx import DECODE_NOISE_SEED

        kwargs["generator"] = torch.Generator().manual_seed(DECODE_NOISE_SEED)
    return kwargs


def pipeline_latents(name: str, latents: torch.Tensor) -> torch.Tensor:
    """Our initial latents as the family's pipeline takes them: LTXPipeline packed tokens
    (B, F*h*w, C) (its ``_pack_latents`` at patch size 1), the others as they are."""
    if name in LTX_OPTIONS:
        return latents.flatten(2).transpose(1, 2).contiguous()
    return latents
