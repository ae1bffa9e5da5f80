"""ModelScope text-to-video and Zeroscope: ``UNet3DConditionModel`` (``TextToVideoSDPipeline``).

Chain: DDIM-eta, epsilon-prediction. Decoding: the layout's VAE frame by frame (the SD VAE,
or the one-block identity VAE of the pixel-space ``tiny-shapes`` model, spatial factor 1),
or none at all for a pixel-space UNet3D (3 channels) whose layout saved its VAE as None.

diffusers gives UNet3D no gradient checkpointing (``enable_gradient_checkpointing`` raises)
and no peft mixin: checkpointing is block-level here (``checkpointing.py``) and LoRA is
injected and loaded with peft directly (``lora.py``). Its ``TemporalConvLayer`` has dropout
0.1: the backbone keeps the UNet in eval mode unless ``train_mode=True``.
"""

from __future__ import annotations

from torch import Tensor

from rlr_video.backbones.base import DiffusersBackbone, or_default, spatial_size
from rlr_video.backbones.checkpointing import set_block_checkpointing
from rlr_video.backbones.layout import BackboneLoadError, Layout
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.schedulers import ddim_transition
from rlr_video.backbones.text import ClipPromptEncoder
from rlr_video.backbones.vae import decode_frames_2d


class ModelScopeBackbone(DiffusersBackbone):
    family = "modelscope"
    denoiser_component = "unet"
    pipeline_class_name = "TextToVideoSDPipeline"
    default_guidance_scale = 9.0  # TextToVideoSDPipeline.__call__
    default_num_frames = 16

    @classmethod
    def from_layout(cls, layout: Layout, options: BackboneOptions) -> ModelScopeBackbone:
        dtype = options.dtype
        unet = layout.load("unet", "diffusers", "UNet3DConditionModel", torch_dtype=dtype)
        vae = _load_vae(layout, unet, options)
        encoder = ClipPromptEncoder(
            layout.load("tokenizer", "transformers", "CLIPTokenizer"),
            layout.load("text_encoder", "transformers", "CLIPTextModel", torch_dtype=dtype),
        )
        transition = ddim_transition(
            layout.load("scheduler", "diffusers", "DDIMScheduler"), options.num_steps, options.stochasticity(1.0)
        )
        # TextToVideoSDPipeline assumes a factor of 8 without a VAE; pixel space has none.
        scale = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        height, width = spatial_size(options, unet.config.sample_size * scale, scale, layout.root)
        frames = options.num_frames or cls.default_num_frames
        return cls(
            unet,
            encoder,
            vae,
            transition,
            options,
            latent_shape=(unet.config.in_channels, frames, height // scale, width // scale),
            guidance_scale=or_default(options.guidance_scale, cls.default_guidance_scale),
            video_shape=(frames, height, width),
            source=layout.root,
        )

    def _denoise(self, x: Tensor, t: Tensor, embeds: Tensor) -> Tensor:
        return self.denoiser(x, t, encoder_hidden_states=embeds).sample  # repeats per frame itself

    def decode(self, latents: Tensor) -> Tensor:
        return decode_frames_2d(self.vae, latents, self.options.decode_chunk_size)

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint each down/mid/up block (diffusers has no switch for UNet3D)."""
        set_block_checkpointing(self.denoiser, True)


def _load_vae(layout: Layout, unet, options: BackboneOptions):
    """The VAE, or None for a pixel-space UNet (3 channels and no VAE in the layout)."""
    if layout.has("vae"):
        return layout.load("vae", "diffusers", "AutoencoderKL", torch_dtype=options.dtype)
    pixel_space = unet.config.in_channels == 3 and unet.config.out_channels == 3
    if pixel_space and (layout.declares_null("vae") or "vae" not in layout.index):
        return None
    raise BackboneLoadError(
        f"{layout.root} is missing the component 'vae': expected a folder {layout.root / 'vae'} with an "
        f"AutoencoderKL (only a pixel-space UNet3D, 3 in/out channels, may have none; this one has "
        f"{unet.config.in_channels})"
    )
