"""CogVideoX: ``CogVideoXTransformer3DModel`` with a causal 3D VAE and a T5 text encoder.

Latents are (B, F, C, h, w) (frames before channels, unlike the other families). The chain
is DDIM-eta over CogVideoX's SNR-shifted alphas with v-prediction (``schedulers.py``):
its own DDIM scheduler ignores eta and its DPM scheduler is multistep, so neither gives the
Gaussian steps RLR needs; at eta = 0 the chain is exactly ``CogVideoXPipeline`` with
``CogVideoXDDIMScheduler``. CogVideoX 1.5 (``patch_size_t``) pads the latent frames to a
multiple of ``patch_size_t`` at the front, and the padding is dropped before decoding, as
the pipeline does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlr_video.backbones.base import DiffusersBackbone, check_frames, or_default, spatial_size
from rlr_video.backbones.causal_vae import CausalDecoding, CausalSteps
from rlr_video.backbones.family import LatentLayout, register_family
from rlr_video.backbones.layout import Layout
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.text import T5PromptEncoder


def cogvideox_decode_steps(vae, z: Tensor) -> CausalSteps:
    """``AutoencoderKLCogVideoX._decode``'s loop (diffusers 0.42): latent frames in groups of
    ``num_latent_frames_batch_size`` (the first takes the remainder), a ``conv_cache`` dict
    carried between groups."""

    def step(piece: Tensor, cache: dict | None, first: bool) -> tuple[Tensor, dict]:
        if vae.post_quant_conv is not None:
            piece = vae.post_quant_conv(piece)
        return vae.decoder(piece, conv_cache=cache)  # returns a new cache; the old one is untouched

    size, frames = vae.num_latent_frames_batch_size, z.shape[2]
    first = size + frames % size  # the first group takes the remainder, as diffusers slices it
    rest = list(z[:, :, first:].split(size, dim=2)) if frames > first else []
    return CausalSteps([z[:, :, :first], *rest], step, lambda frames: frames)


@register_family(
    "cogvideox",
    aliases=("cogvideo",),
    pipelines=("CogVideoXPipeline",),
    denoisers=(("transformer", "CogVideoXTransformer3DModel"),),
    # (B, F, C, h, w); an even latent count decodes to 4n frames, so frames are 1 + 8k
    layout=LatentLayout(frame_axis=1, temporal_compression=4, frame_step=8),
    decoder="causal",
    denoiser_kind="transformer",
    shard_blocks=("CogVideoXBlock",),
    checkpoint_blocks=("CogVideoXBlock",),
    decode_steps=cogvideox_decode_steps,
)
class CogVideoXBackbone(CausalDecoding, DiffusersBackbone):
    denoiser_component = "transformer"
    pipeline_class_name = "CogVideoXPipeline"
    default_guidance_scale = 6.0  # CogVideoXPipeline.__call__ (use_dynamic_cfg off)

    @classmethod
    def from_layout(cls, layout: Layout, options: BackboneOptions) -> CogVideoXBackbone:
        dtype = options.dtype
        transformer = layout.load("transformer", "diffusers", "CogVideoXTransformer3DModel", torch_dtype=dtype)
        vae = layout.load("vae", "diffusers", "AutoencoderKLCogVideoX", torch_dtype=dtype)
        cfg = transformer.config
        encoder = T5PromptEncoder(
            layout.load("tokenizer", "transformers", "T5Tokenizer"),
            layout.load("text_encoder", "transformers", "T5EncoderModel", torch_dtype=dtype),
            max_length=or_default(options.max_sequence_length, cfg.max_text_seq_length),
            masked=False,
        )
        from rlr_video.backbones.schedulers import cogvideox_transition

        transition = cogvideox_transition(
            layout.load("scheduler", "diffusers", "CogVideoXDDIMScheduler"),
            options.num_steps,
            options.stochasticity(1.0),
        )
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        temporal = vae.config.temporal_compression_ratio
        height, width = spatial_size(
            options, (cfg.sample_height * scale, cfg.sample_width * scale), scale * cfg.patch_size, layout.root
        )
        frames = options.num_frames or cfg.sample_frames
        latent_frames = check_frames(frames, temporal, layout.root)
        if latent_frames % 2 == 0:
            # Its causal VAE keeps the first latent frame apart only for an odd count: an
            # even count decodes to temporal * n frames, not the 1 + temporal * (n - 1) asked.
            raise ValueError(
                f"num_frames={frames} gives {latent_frames} latent frames; CogVideoX's VAE decodes an even "
                f"number of latent frames to {temporal * latent_frames} frames: use 1 + {2 * temporal}k "
                f"frames (e.g. {1 + 2 * temporal}, 49)"
            )
        padding = 0
        if cfg.patch_size_t is not None and latent_frames % cfg.patch_size_t:
            padding = cfg.patch_size_t - latent_frames % cfg.patch_size_t
        backbone = cls(
            transformer,
            encoder,
            vae,
            transition,
            options,
            latent_shape=(latent_frames + padding, cfg.in_channels, height // scale, width // scale),
            guidance_scale=or_default(options.guidance_scale, cls.default_guidance_scale),
            video_shape=(frames, height, width),
            source=layout.root,
        )
        backbone.frame_padding = padding
        backbone.vae_scale = scale
        return backbone

    def _rotary(self, latent_frames: int, device: torch.device):
        """The 3D RoPE tables (CogVideoX-5b and 1.5), as ``CogVideoXPipeline`` builds them."""
        cfg = self.denoiser.config
        if not cfg.use_rotary_positional_embeddings:
            return None
        key = (latent_frames, str(device))
        cache = self.__dict__.setdefault("_rotary_cache", {})
        if key not in cache:
            from diffusers.models.embeddings import get_3d_rotary_pos_embed
            from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

            p, p_t = cfg.patch_size, cfg.patch_size_t
            grid = (self.height // (self.vae_scale * p), self.width // (self.vae_scale * p))
            base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
            if p_t is None:
                crops = get_resize_crop_region_for_grid(grid, base_w, base_h)
                tables = get_3d_rotary_pos_embed(
                    embed_dim=cfg.attention_head_dim,
                    crops_coords=crops,
                    grid_size=grid,
                    temporal_size=latent_frames,
                    device=device,
                )
            else:
                tables = get_3d_rotary_pos_embed(
                    embed_dim=cfg.attention_head_dim,
                    crops_coords=None,
                    grid_size=grid,
                    temporal_size=(latent_frames + p_t - 1) // p_t,
                    grid_type="slice",
                    max_size=(base_h, base_w),
                    device=device,
                )
            cache[key] = tables
        return cache[key]

    def _denoise(self, x: Tensor, t: Tensor, embeds: Tensor) -> Tensor:
        return self.denoiser(
            hidden_states=x,
            encoder_hidden_states=embeds,
            timestep=t.expand(x.shape[0]),
            image_rotary_emb=self._rotary(x.shape[1], x.device),
            return_dict=False,
        )[0]

    def latent_shape_for(self, frames: int, height: int, width: int) -> tuple[int, ...]:
        """With the padding frames of CogVideoX 1.5 (``patch_size_t``) in front."""
        shape = super().latent_shape_for(frames, height, width)
        return (shape[0] + self.frame_padding, *shape[1:])

    def vae_input(self, latents: Tensor) -> Tensor:
        """(B, F_lat, C, h, w) without the padding frames -> (B, C, F_lat, h, w), unscaled."""
        latents = latents[:, self.frame_padding :].permute(0, 2, 1, 3, 4).to(self.vae.dtype)
        return 1 / self.vae.config.scaling_factor * latents
