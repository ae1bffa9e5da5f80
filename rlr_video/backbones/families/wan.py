"""Wan 2.1 text-to-video: ``WanTransformer3DModel``, the Wan causal 3D VAE, UMT5 text.

A rectified-flow model (velocity prediction): the chain is the flow-matching SDE over
``FlowMatchEulerDiscreteScheduler``'s shifted sigmas (``FlowSDETransition``); at noise level 0
it is ``WanPipeline`` with that scheduler. Hub repositories ship ``UniPCMultistepScheduler``
with ``flow_shift``; its shift is carried over (``schedulers.flow_transition``). Wan 2.2's
layouts (TI2V-5B's expanded timesteps, A14B's two experts) share ``WanPipeline`` and
``WanTransformer3DModel``; ``wan_variant`` tells them apart and ``wan22.py`` loads them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlr_video.backbones.base import DiffusersBackbone, check_frames, or_default
from rlr_video.backbones.causal_vae import CausalDecoding, CausalSteps
from rlr_video.backbones.family import LatentLayout, register_family
from rlr_video.backbones.layout import BackboneLoadError, Layout
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.text import T5PromptEncoder

# What each Wan family loads, by ``wan_variant``.
WAN_FAMILIES = {"2.1": "wan", "2.2-ti2v": "wan22-ti2v", "2.2-a14b": "wan22-a14b"}


def wan_variant(layout: Layout) -> str:
    """Which Wan model a ``WanPipeline`` folder holds, from its ``model_index.json`` as
    ``WanPipeline`` reads it: ``"2.2-a14b"`` with a second expert (``transformer_2``, switched at
    ``boundary_ratio``), ``"2.2-ti2v"`` with ``expand_timesteps`` (TI2V-5B), else ``"2.1"``."""
    experts, expand = layout.entry("transformer_2") is not None, bool(layout.index.get("expand_timesteps"))
    if experts and expand:
        raise BackboneLoadError(
            f"{layout.root}/model_index.json has both a second expert (transformer_2) and expand_timesteps: "
            "no published Wan model has both; supported are Wan 2.1, Wan 2.2 TI2V-5B (expand_timesteps) and "
            "Wan 2.2 A14B (transformer_2)"
        )
    return "2.2-a14b" if experts else "2.2-ti2v" if expand else "2.1"


def accepts(variant: str):
    """A family's ``accepts`` rule: the layouts of one ``wan_variant`` (a layout no Wan family
    supports is left to the family's ``from_layout``, whose error says why)."""

    def rule(layout: Layout) -> bool:
        try:
            return wan_variant(layout) == variant
        except BackboneLoadError:
            return False

    return rule


def check_variant(layout: Layout, variant: str) -> None:
    """Raise ``BackboneLoadError`` unless ``layout`` holds the Wan model of ``variant``."""
    found = wan_variant(layout)
    if found != variant:
        raise BackboneLoadError(
            f"{layout.root} is a Wan {found} layout, loaded by the family {WAN_FAMILIES[found]!r}; "
            f"the family {WAN_FAMILIES[variant]!r} loads Wan {variant}"
        )


def wan_decode_steps(vae, z: Tensor) -> CausalSteps:
    """``AutoencoderKLWan._decode``'s loop (diffusers 0.42): one latent frame per decoder call,
    the causal convolutions' last frames carried in a list ``feat_cache``, the first call with
    ``first_chunk``; then the 2.2 VAE's ``unpatchify`` (``patch_size``) and the clamp. The 2.2
    VAE's residual up-blocks (``is_residual``) sit inside ``vae.decoder``: the same loop."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    def step(piece: Tensor, cache: list, first: bool) -> tuple[Tensor, list]:
        cache = list(cache)  # the decoder writes into it; a recomputed step must start from the same one
        return vae.decoder(piece, feat_cache=cache, feat_idx=[0], first_chunk=first), cache

    def finish(frames: Tensor) -> Tensor:
        if vae.config.patch_size is not None:
            frames = unpatchify(frames, patch_size=vae.config.patch_size)
        return frames.clamp(-1.0, 1.0)

    x = vae.post_quant_conv(z)
    pieces = list(x.split(1, dim=2))
    return CausalSteps(pieces, step, finish, [None] * vae._cached_conv_counts["decoder"])


@register_family(
    "wan",
    aliases=("wan2.1", "wan21"),
    pipelines=("WanPipeline",),
    denoisers=(("transformer", "WanTransformer3DModel"),),
    accepts=accepts("2.1"),
    layout=LatentLayout(frame_axis=2, temporal_compression=4, frame_step=4),
    decoder="causal",
    denoiser_kind="transformer",
    shard_blocks=("WanTransformerBlock",),
    checkpoint_blocks=("WanTransformerBlock",),
    decode_steps=wan_decode_steps,
)
class WanBackbone(CausalDecoding, DiffusersBackbone):
    denoiser_component = "transformer"
    pipeline_class_name = "WanPipeline"
    # WanPipeline.__call__ defaults.
    default_guidance_scale = 5.0
    default_size = (480, 832, 81)
    default_max_sequence_length = 512

    @classmethod
    def from_layout(cls, layout: Layout, options: BackboneOptions) -> WanBackbone:
        check_variant(layout, "2.1")
        return cls.build(layout, options, cls.load_transformer(layout, "transformer", options))

    @staticmethod
    def load_transformer(layout: Layout, component: str, options: BackboneOptions):
        return layout.load(component, "diffusers", "WanTransformer3DModel", torch_dtype=options.dtype)

    @classmethod
    def build(cls, layout: Layout, options: BackboneOptions, transformer, **extra) -> WanBackbone:
        """The backbone around ``transformer``: the VAE, UMT5, the chain and the video size
        (``extra``: the subclass's own constructor arguments)."""
        dtype = options.dtype
        vae = layout.load("vae", "diffusers", "AutoencoderKLWan", torch_dtype=dtype)
        encoder = T5PromptEncoder(
            layout.load("tokenizer", "transformers", "AutoTokenizer"),
            layout.load("text_encoder", "transformers", "UMT5EncoderModel", torch_dtype=dtype),
            max_length=or_default(options.max_sequence_length, cls.default_max_sequence_length),
            masked=True,
        )
        from rlr_video.backbones.schedulers import flow_transition

        transition = flow_transition(
            layout.load("scheduler", "diffusers", "FlowMatchEulerDiscreteScheduler"),
            options.num_steps,
            noise_level=options.stochasticity(0.7),
            shift=options.shift,
        )
        scale, temporal = vae.config.scale_factor_spatial, vae.config.scale_factor_temporal
        default_h, default_w, default_f = cls.default_size
        patch = transformer.config.patch_size
        height, width = options.height or default_h, options.width or default_w
        # WanPipeline rounds other sizes down (with a logged warning); refused here, so the video
        # trained on is the size the config says.
        if height % (scale * patch[1]) or width % (scale * patch[2]):
            raise ValueError(
                f"height={height}, width={width} must be multiples of {scale * patch[1]} for the model at "
                f"{layout.root} (its VAE's spatial factor {scale} x the transformer's patch {patch[1]})"
            )
        frames = options.num_frames or default_f
        latent_frames = check_frames(frames, temporal, layout.root)
        return cls(
            transformer,
            encoder,
            vae,
            transition,
            options,
            latent_shape=(transformer.config.in_channels, latent_frames, height // scale, width // scale),
            guidance_scale=or_default(options.guidance_scale, cls.default_guidance_scale),
            video_shape=(frames, height, width),
            source=layout.root,
            **extra,
        )

    def _denoise(self, x: Tensor, t: Tensor, embeds: Tensor) -> Tensor:
        return self.call_transformer(self.denoiser, x, t, embeds)

    def call_transformer(self, model, x: Tensor, t: Tensor, embeds: Tensor) -> Tensor:
        # WanPipeline runs the conditional and unconditional branches as two calls; one
        # batched call computes the same per-sample function.
        return model(
            hidden_states=x, timestep=self.model_timestep(x, t), encoder_hidden_states=embeds, return_dict=False
        )[0]

    def model_timestep(self, x: Tensor, t: Tensor) -> Tensor:
        """The transformer's ``timestep`` input for the latents ``x``: one per video."""
        return t.expand(x.shape[0])

    def vae_input(self, latents: Tensor) -> Tensor:
        """Un-normalised with the VAE's per-channel mean/std, as WanPipeline does."""
        cfg = self.vae.config
        latents = latents.to(self.vae.dtype)
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean).view(shape).to(latents)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(shape).to(latents)
        return latents / inv_std + mean
