"""CPU-sized random-weight pipelines of every family, for ``tools/bench_speed.py``.

The test suite's tiny builders (``tests/backbone_fixtures.py``) scaled up until a denoiser call
costs something: the same diffusers classes, tokenizers and schedulers, with the denoiser's width
and depth as arguments (``width``: the first block's channels of a UNet, the hidden size of a
transformer; ``depth``: layers per block, or transformer blocks) so the benchmark can sweep the
model size. Each builder saves a whole pipeline with ``save_pretrained`` and returns its folder,
which both ``load_backbone`` and the family's own diffusers pipeline load.

A family is one ``SpeedFamily`` entry in ``FAMILIES``: another family adds its builder and one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny tokenizers and text encoders live with the tests

import backbone_fixtures as fx  # noqa: E402

from rlr_video.backbones.families.ltx import DECODE_NOISE_SEED  # noqa: E402

TEXT_WIDTH = 32  # the text encoders' hidden size (the fixtures' T5 width; CLIP's is set here)


@dataclass(frozen=True)
class SpeedFamily:
    """One family as the speed benchmark runs it.

    Attributes:
        name: the registered family (``rlr_video.backbones.family``).
        pipeline: the diffusers pipeline class that generates the same video.
        build: ``(directory, width, depth) -> saved pipeline folder``.
        width, depth: the default model size.
        height, width_px: the video's pixels; frames: its frames in the estimator section;
            frames_sweep: the frame counts of the growth section (8/16/32, or the nearest valid
            counts of a causal VAE).
        text_length: ``max_sequence_length`` for a T5 family (None: CLIP's tokenizer length).
        extra: options of the family that both ``load_backbone`` and the pipeline take.
        decode_seed: the seed of the generator the pipeline draws its decode noise from (LTX).
        pack: our initial latents as the pipeline takes them (LTX packs them into tokens).
        negative_prompt: whether the family takes one (HunyuanVideo 1.0's guidance is a model input).
        guider: the pipeline guides with its ``guider`` (HunyuanVideo 1.5), not a call argument.
        text_length_call: ``text_length`` is a call argument of the pipeline (else ``prepare`` sets it).
        prepare: the pipeline set up after loading, as the parity tests do (text lengths, VAE slicing).
    """

    name: str
    pipeline: str
    build: Callable[[Path, int, int], Path]
    width: int
    depth: int
    height: int
    width_px: int
    frames: int
    frames_sweep: tuple[int, ...]
    text_length: int | None = None
    extra: dict = field(default_factory=dict)
    decode_seed: int | None = None
    pack: Callable[[torch.Tensor], torch.Tensor] | None = None
    negative_prompt: bool = True
    guider: bool = False
    text_length_call: bool = True
    prepare: Callable[[Any], None] | None = None

    def options(self, **overrides) -> dict:
        """``load_backbone`` options for this family's video size (``overrides`` win)."""
        options = dict(height=self.height, width=self.width_px, num_frames=self.frames)
        if self.text_length is not None:
            options["max_sequence_length"] = self.text_length
        options.update(self.extra)
        options.update(overrides)
        return options

    def pipeline_kwargs(self, frames: int | None = None) -> dict:
        """What the family's pipeline needs to generate the same video."""
        kwargs = dict(height=self.height, width=self.width_px, num_frames=frames or self.frames)
        if self.text_length is not None and self.text_length_call:
            kwargs["max_sequence_length"] = self.text_length
        kwargs.update(self.extra)
        if self.decode_seed is not None:
            kwargs["generator"] = torch.Generator().manual_seed(self.decode_seed)
        return kwargs

    def pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.pack is None else self.pack(latents)

    def guidance_kwargs(self, pipe, guidance: float, negative: list[str]) -> dict:
        """The pipeline's guidance as the backbone's ``guidance_scale`` and negative prompt:
        a call argument, or its guider's scale (set on ``pipe``)."""
        if self.guider:
            pipe.guider = pipe.guider.new(guidance_scale=guidance)
            kwargs = {}
        else:
            kwargs = {"guidance_scale": guidance}
        if self.negative_prompt:
            kwargs["negative_prompt"] = negative
        return kwargs


def _clip_text(seed: int):
    torch.manual_seed(seed)
    tokenizer = fx.tiny_clip_tokenizer()
    return tokenizer, fx.tiny_clip_text_encoder(len(tokenizer), hidden=TEXT_WIDTH)


def _sd_vae():
    """The SD VAE's classes at a CPU size: spatial factor 4."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 16, 32),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
    ).eval()


def _unet_blocks(width: int, depth: int, kind: str) -> dict:
    return dict(
        block_out_channels=(width, 2 * width),
        layers_per_block=depth,
        down_block_types=(f"CrossAttnDownBlock{kind}", f"DownBlock{kind}"),
        up_block_types=(f"UpBlock{kind}", f"CrossAttnUpBlock{kind}"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def build_animatediff(directory: Path, width: int = 32, depth: int = 1, seed: int = 0) -> Path:
    """``AnimateDiffPipeline``: an SD-style UNet2D plus a MotionAdapter, channels (w, 2w)."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter, UNet2DConditionModel

    tokenizer, text = _clip_text(seed)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, sample_size=16, **_unet_blocks(width, depth, "2D"))
    adapter = MotionAdapter(
        block_out_channels=(width, 2 * width),
        motion_layers_per_block=depth,
        motion_norm_num_groups=8,
        motion_num_attention_heads=2,
        motion_max_seq_length=64,
    )
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False, timestep_spacing="linspace", steps_offset=1)
    pipe = AnimateDiffPipeline(
        vae=_sd_vae(),
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        motion_adapter=adapter,
        scheduler=scheduler,
        feature_extractor=None,
        image_encoder=None,
    )
    pipe.save_pretrained(directory)
    return directory


def build_modelscope(directory: Path, width: int = 32, depth: int = 1, seed: int = 0) -> Path:
    """``TextToVideoSDPipeline`` around a ``UNet3DConditionModel`` with channels (w, 2w)."""
    from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

    tokenizer, text = _clip_text(seed)
    unet = UNet3DConditionModel(in_channels=4, out_channels=4, sample_size=16, **_unet_blocks(width, depth, "3D"))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = TextToVideoSDPipeline(vae=_sd_vae(), text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(directory)
    return directory


def _t5(cls_config, cls_model, seed: int):
    torch.manual_seed(seed)
    tokenizer = fx.tiny_t5_tokenizer()
    return tokenizer, cls_model(fx._t5_config(cls_config, len(tokenizer), TEXT_WIDTH)).eval()


def build_cogvideox(directory: Path, width: int = 64, depth: int = 2, seed: int = 0) -> Path:
    """``CogVideoXPipeline``: a ``CogVideoXTransformer3DModel`` of ``depth`` blocks, ``width``
    wide (heads of 16), and the causal 3D VAE (spatial factor 4, temporal 4)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline
    from diffusers import CogVideoXTransformer3DModel as Transformer
    from transformers import T5Config, T5EncoderModel

    tokenizer, text = _t5(T5Config, T5EncoderModel, seed)
    transformer = Transformer(
        num_attention_heads=width // 16,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=32,
        text_embed_dim=TEXT_WIDTH,
        num_layers=depth,
        sample_width=16,
        sample_height=16,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=fx.T5_MAX_LENGTH,
    )
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        block_out_channels=(8, 16, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
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
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer, text_encoder=text, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.save_pretrained(directory)
    return directory


def _wan_transformer(width: int, depth: int, channels: int = 16):
    """A ``WanTransformer3DModel`` of ``depth`` blocks, ``width`` wide (heads of 16)."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=width // 16,
        attention_head_dim=16,
        in_channels=channels,
        out_channels=channels,
        text_dim=TEXT_WIDTH,
        freq_dim=32,
        ffn_dim=2 * width,
        num_layers=depth,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )


def _wan21_vae():
    """The Wan 2.1 causal VAE's class at a CPU size: spatial factor 4, temporal 4."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        scale_factor_spatial=4,
    ).eval()


def build_wan(directory: Path, width: int = 64, depth: int = 2, seed: int = 0) -> Path:
    """``WanPipeline`` (2.1): a ``WanTransformer3DModel`` of ``depth`` blocks, ``width`` wide
    (heads of 16), and the Wan causal VAE (spatial factor 4, temporal 4)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer, text = _t5(UMT5Config, UMT5EncoderModel, seed)
    transformer = _wan_transformer(width, depth)  # before the VAE: the seed's draws in that order
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text,
        vae=_wan21_vae(),
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    pipe.save_pretrained(directory)
    return directory


def build_wan22_a14b(directory: Path, width: int = 128, depth: int = 2, seed: int = 0) -> Path:
    """``WanPipeline`` in Wan 2.2 A14B's layout: two experts (``transformer``, ``transformer_2``),
    each as ``build_wan``'s, switched at ``boundary_ratio`` 0.875 with Wan's shift 12 (its
    ``wan_t2v_A14B.py``), and the 2.1 VAE at ``build_wan``'s size."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer, text = _t5(UMT5Config, UMT5EncoderModel, seed)
    experts = _wan_transformer(width, depth), _wan_transformer(width, depth)  # different random weights
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text,
        vae=_wan21_vae(),
        transformer=experts[0],
        transformer_2=experts[1],
        scheduler=FlowMatchEulerDiscreteScheduler(shift=12.0),
        boundary_ratio=0.875,
    )
    pipe.save_pretrained(directory)
    return directory


def _swapped(pipe, directory: Path, **components) -> Path:
    """A test fixture's tiny pipeline with ``components`` (the denoiser at the benchmark's size)
    put in its place, saved."""
    pipe.register_modules(**components)
    pipe.save_pretrained(directory)
    return directory


def build_wan22_ti2v(directory: Path, width: int = 128, depth: int = 2, seed: int = 0) -> Path:
    """``WanPipeline`` in Wan 2.2 TI2V-5B's layout (``expand_timesteps``, 48 latent channels):
    ``build_wan``'s transformer with 48 channels, and the fixtures' tiny 2.2 VAE (spatial factor
    16 with its 2x2 patch, temporal 4; ``tests/backbone_fixtures.py``)."""
    return _swapped(fx.tiny_wan22_ti2v_pipeline(seed), directory, transformer=_wan_transformer(width, depth, 48))


def build_hunyuanvideo15(directory: Path, width: int = 128, depth: int = 2, seed: int = 0) -> Path:
    """``HunyuanVideo15Pipeline`` (text-to-video): a ``HunyuanVideo15Transformer3DModel`` of
    ``depth`` double-stream blocks, ``width`` wide (heads of 16, MLP ratio 4 as published), with
    the fixtures' tiny text encoders (Qwen2.5-VL text model and byT5, 16 wide) and VAE (spatial
    factor 16, temporal 4)."""
    from diffusers import HunyuanVideo15Transformer3DModel

    pipe = fx.tiny_hunyuanvideo15_pipeline(seed)
    latent = pipe.vae.config.latent_channels
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=2 * latent + 1,  # latents, the zero image latents and the mask
        out_channels=latent,
        num_attention_heads=width // 16,
        attention_head_dim=16,
        num_layers=depth,
        num_refiner_layers=1,
        text_embed_dim=pipe.text_encoder.config.hidden_size,
        text_embed_2_dim=pipe.text_encoder_2.config.d_model,
        image_embed_dim=8,
        rope_axes_dim=(4, 6, 6),  # sums to the head width
        target_size=128,
        task_type="t2v",
    )
    return _swapped(pipe, directory, transformer=transformer)


def build_hunyuanvideo(directory: Path, width: int = 128, depth: int = 2, seed: int = 0) -> Path:
    """``HunyuanVideoPipeline`` (1.0, guidance embedded): a ``HunyuanVideoTransformer3DModel`` of
    ``depth`` double- and ``depth`` single-stream blocks, ``width`` wide (heads of 16, MLP ratio 4
    as published), with the fixtures' tiny text encoders (Llama and CLIP, 16 wide) and VAE
    (spatial factor 8, temporal 4)."""
    from diffusers import HunyuanVideoTransformer3DModel

    pipe = fx.tiny_hunyuanvideo_pipeline(seed)
    latent = pipe.vae.config.latent_channels
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=latent,
        out_channels=latent,
        num_attention_heads=width // 16,
        attention_head_dim=16,
        num_layers=depth,
        num_single_layers=depth,
        num_refiner_layers=1,
        text_embed_dim=pipe.text_encoder.config.hidden_size,
        pooled_projection_dim=pipe.text_encoder_2.config.projection_dim,
        rope_axes_dim=(4, 6, 6),  # sums to the head width
    )
    return _swapped(pipe, directory, transformer=transformer)


def build_ltx(directory: Path, width: int = 128, depth: int = 2, seed: int = 0) -> Path:
    """``LTXPipeline``: an ``LTXVideoTransformer3DModel`` of ``depth`` blocks, ``width`` wide (heads
    of 16; its cross-attention is as wide, as 2048 = 32 x 64 in the published 2B), and the tests'
    0.9.5-layout VAE (spatial factor 16, temporal 8, timestep-conditioned decoder)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer, text = _t5(T5Config, T5EncoderModel, seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=width // 16,
        attention_head_dim=16,
        cross_attention_dim=width,
        num_layers=depth,
        caption_channels=TEXT_WIDTH,
    )
    pipe = LTXPipeline(
        tokenizer=tokenizer,
        text_encoder=text,
        vae=fx._ltx_vae("0.9.5"),
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False),
    )
    pipe.save_pretrained(directory)
    return directory


def _prepare_hunyuanvideo15(pipe) -> None:
    """HunyuanVideo15Pipeline's text lengths are attributes (1000 and 256 as published; the
    backbone's ``max_sequence_length`` bounds both), and diffusers 0.42.1's VAE decodes a batch of
    two videos only one at a time (``tests/backbone_fixtures.py``, ``tiny_pipeline``)."""
    pipe.tokenizer_max_length = pipe.tokenizer_2_max_length = fx.HUNYUAN_TEXT_LENGTH
    pipe.vae.enable_slicing()


def _pack_ltx(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, F, h, w) -> LTXPipeline's packed tokens (B, F*h*w, C) (patch size 1)."""
    return latents.flatten(2).transpose(1, 2).contiguous()


FAMILIES: dict[str, SpeedFamily] = {
    f.name: f
    for f in (
        SpeedFamily("animatediff", "AnimateDiffPipeline", build_animatediff, 16, 1, 64, 64, 8, (8, 16, 32)),
        SpeedFamily("modelscope", "TextToVideoSDPipeline", build_modelscope, 16, 1, 64, 64, 8, (8, 16, 32)),
        SpeedFamily(
            "cogvideox", "CogVideoXPipeline", build_cogvideox, 128, 2, 64, 64, 9, (9, 17, 33), fx.T5_MAX_LENGTH
        ),
        SpeedFamily("wan", "WanPipeline", build_wan, 128, 2, 64, 64, 9, (9, 17, 33), fx.T5_MAX_LENGTH),
        SpeedFamily(
            "ltx",
            "LTXPipeline",
            build_ltx,
            128,
            2,
            128,
            128,
            9,
            (9, 17, 33),
            fx.T5_MAX_LENGTH,
            extra={"decode_timestep": 0.05, "decode_noise_scale": 0.025},
            decode_seed=DECODE_NOISE_SEED,
            pack=_pack_ltx,
        ),
        # sizes: multiples of 32 for the 2.2 VAE (16 pixels per latent, 2x2 patches)
        SpeedFamily("wan22-ti2v", "WanPipeline", build_wan22_ti2v, 128, 2, 128, 128, 9, (9, 17, 33), fx.T5_MAX_LENGTH),
        SpeedFamily("wan22-a14b", "WanPipeline", build_wan22_a14b, 128, 2, 64, 64, 9, (9, 17, 33), fx.T5_MAX_LENGTH),
        SpeedFamily(
            "hunyuanvideo15",
            "HunyuanVideo15Pipeline",
            build_hunyuanvideo15,
            128,
            2,
            128,
            128,
            9,
            (9, 17, 33),
            fx.HUNYUAN_TEXT_LENGTH,
            guider=True,
            text_length_call=False,
            prepare=_prepare_hunyuanvideo15,
        ),
        SpeedFamily(
            "hunyuanvideo",
            "HunyuanVideoPipeline",
            build_hunyuanvideo,
            128,
            2,
            64,
            64,
            9,
            (9, 17, 33),
            fx.HUNYUAN_TEXT_LENGTH,
            negative_prompt=False,
        ),
    )
}

# The size sweep's (width, depth) per family: from below the benchmark's size to where the
# denoiser's share of an update levels off (the decoder and reward stay as they are).
SWEEPS: dict[str, list[tuple[int, int]]] = {
    "wan": [(32, 1), (64, 2), (128, 2), (128, 4), (256, 4), (256, 8), (512, 8)],
    "cogvideox": [(32, 1), (64, 2), (128, 2), (128, 4), (256, 4), (256, 8)],
    "animatediff": [(8, 1), (16, 1), (32, 1), (32, 2), (64, 2)],
    "modelscope": [(8, 1), (16, 1), (32, 1), (32, 2), (64, 2)],
    "ltx": [(32, 1), (64, 2), (128, 2), (128, 4), (256, 4), (256, 8), (512, 8)],
    "wan22-ti2v": [(32, 1), (64, 2), (128, 2), (128, 4), (256, 4), (256, 8), (512, 8)],
    "wan22-a14b": [(32, 1), (64, 2), (128, 2), (128, 4), (256, 4), (256, 8)],
    "hunyuanvideo15": [(32, 1), (64, 2), (128, 2), (128, 4), (256, 4), (256, 8)],
    "hunyuanvideo": [(32, 1), (64, 2), (128, 2), (128, 4), (256, 4), (256, 8)],
}
