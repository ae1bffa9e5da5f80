"""What AnimateDiff and ModelScope/Zeroscope share: an SD-style UNet with a CLIP text
encoder, a DDIM-eta chain (epsilon-prediction) and a 2D VAE decoding frame by frame."""

from __future__ import annotations

from torch import nn

from rlr_video.backbones.base import DiffusersBackbone, or_default, spatial_size
from rlr_video.backbones.layout import Layout
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.schedulers import ddim_transition
from rlr_video.backbones.text import ClipPromptEncoder
from rlr_video.backbones.vae import decode_frames_2d


class SDUNetBackbone(DiffusersBackbone):
    """Subclasses say how their UNet (and VAE) load; the rest of the layout is common."""

    @classmethod
    def load_unet(cls, layout: Layout, options: BackboneOptions) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def load_vae(cls, layout: Layout, unet: nn.Module, options: BackboneOptions) -> nn.Module | None:
        return layout.load("vae", "diffusers", "AutoencoderKL", torch_dtype=options.dtype)

    @classmethod
    def from_layout(cls, layout: Layout, options: BackboneOptions) -> SDUNetBackbone:
        dtype = options.dtype
        unet = cls.load_unet(layout, options)
        vae = cls.load_vae(layout, unet, options)
        encoder = ClipPromptEncoder(
            layout.load("tokenizer", "transformers", "CLIPTokenizer"),
            layout.load("text_encoder", "transformers", "CLIPTextModel", torch_dtype=dtype),
        )
        transition = ddim_transition(
            layout.load("scheduler", "diffusers", "DDIMScheduler"), options.num_steps, options.stochasticity(1.0)
        )
        # pipelines assume a factor of 8 without a VAE; pixel space has none (factor 1)
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

    def decode(self, latents):
        return decode_frames_2d(self.vae, latents, self.options.decode_chunk_size)
