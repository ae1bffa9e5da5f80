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

from rlr_video.backbones.checkpointing import set_block_checkpointing
from rlr_video.backbones.layout import BackboneLoadError, Layout
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.sd_unet import SDUNetBackbone


class ModelScopeBackbone(SDUNetBackbone):
    family = "modelscope"
    denoiser_component = "unet"
    pipeline_class_name = "TextToVideoSDPipeline"
    default_guidance_scale = 9.0  # TextToVideoSDPipeline.__call__
    default_num_frames = 16

    @classmethod
    def load_unet(cls, layout: Layout, options: BackboneOptions):
        return layout.load("unet", "diffusers", "UNet3DConditionModel", torch_dtype=options.dtype)

    @classmethod
    def load_vae(cls, layout: Layout, unet, options: BackboneOptions):
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

    def _denoise(self, x: Tensor, t: Tensor, embeds: Tensor) -> Tensor:
        return self.denoiser(x, t, encoder_hidden_states=embeds).sample  # repeats per frame itself

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint each down/mid/up block (diffusers has no switch for UNet3D)."""
        set_block_checkpointing(self.denoiser, True)
