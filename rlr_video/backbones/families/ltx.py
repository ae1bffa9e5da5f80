"""LTX-Video: ``LTXVideoTransformer3DModel``, the LTX video VAE, T5 text; ``LTXPipeline``.

A rectified-flow model (velocity prediction): the chain is the flow-matching SDE over the sigmas
``LTXPipeline`` (diffusers 0.42) samples with, at noise level 0 exactly its sampler.

- **Latents.** The transformer takes packed tokens (B, N, C) with N = F x h x w, frame-major.
  The chain keeps the latents unpacked, (B, C, F, h, w) as the VAE sees them (the family's
  ``LatentLayout(frame_axis=2)``), and packs them around each denoiser call: with LTX's patch
  size 1 packing is a permutation, so the SDE's steps (elementwise) and log-probabilities (sums)
  are the pipeline's, and ``latent_shape_for`` / ``tokens_per_latent_frame`` describe the
  unpacked grid (h x w tokens per latent frame). The initial noise is drawn in this layout, as
  ``LTXPipeline.prepare_latents`` draws it before packing: one seed, the same video.
- **Shift.** The sigmas are ``linspace(1, 1/N, N)`` shifted by mu, a linear function of the
  latent sequence length, and stretched to ``shift_terminal`` (``schedulers.
  length_shifted_flow_transition``); 0.9.5's scheduler turns the dynamic shift off.
- **Text.** T5 runs on the padded prompt without a mask (as the pipeline does) and the token
  mask goes to the transformer's cross-attention (``TextConditioning.mask``).
- **Rotary embedding.** Its temporal coordinate is scaled by the VAE's temporal ratio over the
  ``frame_rate`` option (default 25, ``LTXPipeline``'s).
- **Decoding.** The latents are un-normalised with the VAE's ``latents_mean`` / ``latents_std``,
  which are stored weights (buffers), not config values. The VAE decoder is not causal and has
  no per-step loop: it decodes the clip in one call (``decoder="whole"``; checkpointing recomputes
  it whole). A timestep-conditioned decoder (0.9.1, 0.9.5) gets ``decode_timestep`` and, as the
  pipeline does, latents mixed with ``decode_noise_scale`` of noise; that noise is drawn from a
  fixed seed (``DECODE_NOISE_SEED``) on every call, so decoding is one deterministic function, the
  same in the rollout and in every backward pass (the pipeline given a generator seeded with it
  draws the same noise). Decoders with injected noise (0.9.1) draw it from the global generator;
  it is seeded the same way.
"""

from __future__ import annotations

import contextlib

import torch
from einops import rearrange
from torch import Tensor

from rlr_video.backbones.base import DiffusersBackbone, check_frames, or_default, spatial_size
from rlr_video.backbones.family import LatentLayout, register_family
from rlr_video.backbones.layout import BackboneLoadError, Layout
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.text import T5PromptEncoder
from rlr_video.backbones.vae import to_unit_range

# The seed of the noise a timestep-conditioned decoder's latents are mixed with (and of a 0.9.1
# decoder's injected noise): LTXPipeline(..., generator=torch.Generator().manual_seed(0)) draws it.
DECODE_NOISE_SEED = 0


class LTXPromptEncoder(T5PromptEncoder):
    """``LTXPipeline._get_t5_prompt_embeds``: the padded prompt through T5 without a mask; the
    embeddings and the token mask the transformer's cross-attention takes."""

    def __init__(self, tokenizer, text_encoder, max_length: int):
        super().__init__(tokenizer, text_encoder, max_length, masked=False)

    @torch.no_grad()
    def __call__(self, texts) -> tuple[Tensor, Tensor]:
        tokens = self._tokens(list(texts), add_special_tokens=True)
        embeds = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return embeds, tokens.attention_mask.bool().to(self.device)


@register_family(
    "ltx",
    aliases=("ltx-video", "ltxv"),
    pipelines=("LTXPipeline",),
    denoisers=(("transformer", "LTXVideoTransformer3DModel"),),
    # unpacked latents (B, C, F, h, w); 1 + 8k frames (the VAE compresses time by 8)
    layout=LatentLayout(frame_axis=2, temporal_compression=8, frame_step=8),
    decoder="whole",
    denoiser_kind="transformer",
    shard_blocks=("LTXVideoTransformerBlock",),
    checkpoint_blocks=("LTXVideoTransformerBlock",),
)
class LTXBackbone(DiffusersBackbone):
    denoiser_component = "transformer"
    pipeline_class_name = "LTXPipeline"
    takes_text_mask = True
    # LTXPipeline.__call__ defaults.
    default_guidance_scale = 3.0
    default_size = (512, 704, 161)
    default_max_sequence_length = 128
    default_frame_rate = 25.0

    @classmethod
    def from_layout(cls, layout: Layout, options: BackboneOptions) -> LTXBackbone:
        dtype = options.dtype
        transformer = layout.load("transformer", "diffusers", "LTXVideoTransformer3DModel", torch_dtype=dtype)
        cfg = transformer.config
        if cfg.patch_size != 1 or cfg.patch_size_t != 1:
            # LTXPipeline builds the rotary grid with one entry per latent position (0.42)
            raise BackboneLoadError(
                f"{layout.root}/transformer: patch_size={cfg.patch_size}, patch_size_t={cfg.patch_size_t}; "
                "LTXPipeline (and this family) run LTX-Video's patch size 1 only"
            )
        vae = layout.load("vae", "diffusers", "AutoencoderKLLTXVideo", torch_dtype=dtype)
        encoder = LTXPromptEncoder(
            layout.load("tokenizer", "transformers", "AutoTokenizer"),
            layout.load("text_encoder", "transformers", "T5EncoderModel", torch_dtype=dtype),
            max_length=or_default(options.max_sequence_length, cls.default_max_sequence_length),
        )
        spatial, temporal = vae.spatial_compression_ratio, vae.temporal_compression_ratio
        default_h, default_w, default_f = cls.default_size
        height, width = spatial_size(options, (default_h, default_w), spatial, layout.root)
        frames = options.num_frames or default_f
        latent_frames = check_frames(frames, temporal, layout.root)
        latent_h, latent_w = height // spatial, width // spatial
        from rlr_video.backbones.schedulers import length_shifted_flow_transition

        transition = length_shifted_flow_transition(
            layout.load("scheduler", "diffusers", "FlowMatchEulerDiscreteScheduler"),
            options.num_steps,
            noise_level=options.stochasticity(0.7),
            sequence_length=latent_frames * latent_h * latent_w,
            shift=options.shift,
        )
        backbone = cls(
            transformer,
            encoder,
            vae,
            transition,
            options,
            latent_shape=(cfg.in_channels, latent_frames, latent_h, latent_w),
            guidance_scale=or_default(options.guidance_scale, cls.default_guidance_scale),
            video_shape=(frames, height, width),
            source=layout.root,
        )
        backbone.frame_rate = float(or_default(options.frame_rate, cls.default_frame_rate))
        backbone.decode_timestep = float(or_default(options.decode_timestep, 0.0))
        backbone.decode_noise_scale = float(or_default(options.decode_noise_scale, backbone.decode_timestep))
        if not vae.config.timestep_conditioning and (backbone.decode_timestep or backbone.decode_noise_scale):
            raise ValueError(
                f"decode_timestep / decode_noise_scale are for a timestep-conditioned VAE (LTX-Video 0.9.1 and "
                f"later); the VAE at {layout.root}/vae has timestep_conditioning false"
            )
        return backbone

    # ------------------------------------------------------------------ denoiser

    def _denoise(self, x: Tensor, t: Tensor, embeds: Tensor, mask: Tensor | None = None) -> Tensor:
        frames, height, width = x.shape[2:]
        tokens = rearrange(x, "b c f h w -> b (f h w) c")  # LTXPipeline._pack_latents at patch size 1
        out = self.denoiser(
            hidden_states=tokens,
            encoder_hidden_states=embeds,
            timestep=t.expand(x.shape[0]),
            encoder_attention_mask=mask,
            num_frames=frames,
            height=height,
            width=width,
            rope_interpolation_scale=self._rope_scale(),
            return_dict=False,
        )[0]
        return rearrange(out, "b (f h w) c -> b c f h w", f=frames, h=height, w=width)

    def _rope_scale(self) -> tuple[float, float, float]:
        """The rotary embedding's coordinate scales, as ``LTXPipeline`` sets them."""
        spatial = self.vae.spatial_compression_ratio
        return (self.vae.temporal_compression_ratio / self.frame_rate, spatial, spatial)

    # ------------------------------------------------------------------ decoder

    def decode(self, latents: Tensor) -> Tensor:
        """Frames (B, F, 3, H, W) in [0, 1]; differentiable. ``LTXPipeline``'s decode: un-normalise,
        then (timestep-conditioned VAEs) mix in the fixed decode noise and pass the timestep."""
        vae = self.vae
        shape = (1, -1, 1, 1, 1)
        mean = vae.latents_mean.view(shape).to(latents.device, latents.dtype)
        std = vae.latents_std.view(shape).to(latents.device, latents.dtype)
        z = latents * std / vae.config.scaling_factor + mean
        temb = None
        if vae.config.timestep_conditioning:
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(DECODE_NOISE_SEED))
            z = (1 - self.decode_noise_scale) * z + self.decode_noise_scale * noise.to(z.device, z.dtype)
            temb = torch.full((z.shape[0],), self.decode_timestep, device=z.device, dtype=vae.dtype)
        with self._injected_noise_seeded():
            video = vae.decode(z.to(vae.dtype), temb, return_dict=False)[0]
        return to_unit_range(video.permute(0, 2, 1, 3, 4))

    @contextlib.contextmanager
    def _injected_noise_seeded(self):
        """A decoder with injected noise (LTX-Video 0.9.1) draws it from the global generator:
        seed it (on a forked state) so that every decode of the same latents is the same."""
        injects = any(getattr(m, "per_channel_scale1", None) is not None for m in self.vae.decoder.modules())
        if not injects:
            yield
            return
        device = self.vae.device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
            torch.manual_seed(DECODE_NOISE_SEED)
            yield

    # ------------------------------------------------------------------ cost-model hooks

    def latent_shape_for(self, frames: int, height: int, width: int) -> tuple[int, ...]:
        """(C, F_lat, h, w) for a video of ``frames`` x ``height`` x ``width``, with this VAE's
        compression (the tokens are these F_lat x h x w positions, packed)."""
        spatial, temporal = self.vae.spatial_compression_ratio, self.vae.temporal_compression_ratio
        if height % spatial or width % spatial:
            raise ValueError(f"{height}x{width} does not tile the latent grid (multiples of {spatial})")
        return (self.latent_shape[0], (frames - 1) // temporal + 1, height // spatial, width // spatial)
