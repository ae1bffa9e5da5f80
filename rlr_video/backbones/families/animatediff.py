"""AnimateDiff: a Stable Diffusion 1.5 UNet with motion modules (``UNetMotionModel``).

Layouts: an ``AnimateDiffPipeline`` directory (``unet/`` is the combined UNetMotionModel, as
``save_pretrained`` writes it), or an SD-1.5 base plus ``motion_adapter=`` (a MotionAdapter
directory or hub id such as ``guoyww/animatediff-motion-adapter-v1-5-2``), combined with
``UNetMotionModel.from_unet2d`` as ``AnimateDiffPipeline.__init__`` does. Chain: DDIM-eta
over the base's noise schedule, epsilon-prediction. Decoding: the SD VAE, frame by frame.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from rlr_video.backbones.family import LatentLayout, register_family
from rlr_video.backbones.layout import Layout, resolve_source
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.sd_unet import SDUNetBackbone


@register_family(
    "animatediff",
    aliases=("animate-diff",),
    pipelines=("AnimateDiffPipeline",),
    denoisers=(("unet", "UNetMotionModel"),),
    layout=LatentLayout(frame_axis=2),
    decoder="frame_local",  # the SD VAE, frame by frame
    denoiser_kind="unet",
    shard_blocks=(
        "CrossAttnDownBlockMotion",
        "DownBlockMotion",
        "UNetMidBlockCrossAttnMotion",
        "CrossAttnUpBlockMotion",
        "UpBlockMotion",
    ),
)
class AnimateDiffBackbone(SDUNetBackbone):
    denoiser_component = "unet"
    pipeline_class_name = "AnimateDiffPipeline"
    default_guidance_scale = 7.5  # AnimateDiffPipeline.__call__
    default_num_frames = 16

    @classmethod
    def load_unet(cls, layout: Layout, options: BackboneOptions):
        return _load_unet(layout, options)

    def _denoise(self, x: Tensor, t: Tensor, embeds: Tensor) -> Tensor:
        # UNetMotionModel runs its spatial layers on (B*F, ...) and, unlike UNet3D, expects
        # the text embeddings already repeated per frame (AnimateDiffPipeline does this).
        frames = x.shape[2]
        return self.denoiser(x, t, encoder_hidden_states=embeds.repeat_interleave(frames, dim=0)).sample


def _load_unet(layout: Layout, options: BackboneOptions):
    if not options.motion_adapter:
        return layout.load("unet", "diffusers", "UNetMotionModel", torch_dtype=options.dtype)
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    unet2d = layout.load("unet", "diffusers", "UNet2DConditionModel", torch_dtype=options.dtype)
    if not isinstance(unet2d, UNet2DConditionModel):
        raise ValueError(f"motion_adapter= needs an SD-1.5 base, but {layout.root}/unet is a {type(unet2d).__name__}")
    adapter_dir = resolve_source(options.motion_adapter)
    adapter = Layout(adapter_dir.parent).load(adapter_dir.name, "diffusers", "MotionAdapter", torch_dtype=options.dtype)
    if not isinstance(adapter, MotionAdapter):
        raise ValueError(f"{options.motion_adapter} is no MotionAdapter")
    # A plan builds the models on the meta device from their configs: the combined one too.
    on_meta = torch.device(options.device).type == "meta"
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        return UNetMotionModel.from_unet2d(unet2d, adapter).to(options.dtype)
