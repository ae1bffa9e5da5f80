"""ModelScope text-to-video and Zeroscope: ``UNet3DConditionModel`` (``TextToVideoSDPipeline``).

Chain: DDIM-eta, epsilon-prediction. Decoding: the layout's VAE frame by frame (the SD VAE,
or the one-block identity VAE of the pixel-space ``tiny-shapes`` model, spatial factor 1),
or none at all for a pixel-space UNet3D (3 channels) whose layout saved its VAE as None.

diffusers gives UNet3D no gradient checkpointing (``enable_gradient_checkpointing`` raises)
and no peft mixin: checkpointing is block-level here (each down/mid/up block's ``forward`` in
``torch.utils.checkpoint``, non-reentrant, so frozen inputs and keyword arguments work and the RNG
state is replayed: the same gradients, less activation memory; it acts only while gradients are
recorded) and LoRA is injected and loaded with peft directly (``lora.py``). Its
``TemporalConvLayer`` has dropout 0.1: the backbone keeps the UNet in eval mode unless
``train_mode=True``.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rlr_video.backbones.family import LatentLayout, register_family
from rlr_video.backbones.layout import BackboneLoadError, Layout
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.sd_unet import SDUNetBackbone

_FLAG = "_rlr_checkpointed"


def denoiser_blocks(model: nn.Module) -> list[nn.Module]:
    """The down, mid and up blocks of a UNet (whatever of them it has)."""
    blocks = list(getattr(model, "down_blocks", []))
    if getattr(model, "mid_block", None) is not None:
        blocks.append(model.mid_block)
    return blocks + list(getattr(model, "up_blocks", []))


def _checkpointed_forward(block: nn.Module, forward):
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        if getattr(block, _FLAG, False) and torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return wrapped


def set_block_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Turn block-level checkpointing of ``model`` on or off; returns the number of blocks.

    The wrapper is installed once per block (an instance attribute shadowing the class's
    ``forward``) and then only switched, so calling this repeatedly is cheap and safe.
    """
    blocks = denoiser_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no down/mid/up blocks to checkpoint")
    for block in blocks:
        if not hasattr(block, _FLAG):
            block.forward = _checkpointed_forward(block, block.forward)
        setattr(block, _FLAG, enabled)
    return len(blocks)


@register_family(
    "modelscope",
    aliases=("zeroscope", "unet3d", "text-to-video-ms"),
    pipelines=("TextToVideoSDPipeline",),
    denoisers=(("unet", "UNet3DConditionModel"),),
    layout=LatentLayout(frame_axis=2),
    decoder="frame_local",  # the SD VAE frame by frame, or pixel space
    denoiser_kind="unet",
    shard_blocks=("CrossAttnDownBlock3D", "DownBlock3D", "UNetMidBlock3DCrossAttn", "CrossAttnUpBlock3D", "UpBlock3D"),
)
class ModelScopeBackbone(SDUNetBackbone):
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

    def disable_gradient_checkpointing(self) -> None:
        set_block_checkpointing(self.denoiser, False)

    @property
    def gradient_checkpointing(self) -> bool:
        return any(getattr(b, _FLAG, False) for b in denoiser_blocks(self.denoiser))
