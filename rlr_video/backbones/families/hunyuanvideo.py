"""HunyuanVideo (1.0) text-to-video: ``HunyuanVideoTransformer3DModel``, its causal 3D VAE, a
Llama text encoder and CLIP's pooled embedding (diffusers 0.42 ``HunyuanVideoPipeline``).

- Text: each prompt is put into the pipeline's prompt template (``DEFAULT_PROMPT_TEMPLATE``);
  Llama's hidden state two layers below the top is kept, less the template's first 95 tokens,
  with its mask; CLIP ViT-L/14's pooled output of the prompt (77 tokens) is the pooled
  projection.
- Guidance is distilled into the model: the guidance scale is a model input (times 1000), each
  step is one call with the prompts, and there is no negative prompt (the pipeline's optional
  "true CFG" with a negative prompt is not supported).
- Chain: the flow-matching SDE over the scheduler's shift of ``linspace(1, 0, T + 1)[:-1]``, the
  sigmas the pipeline passes; at noise level 0 it is the pipeline's Euler sampler.
- Decoding: the VAE decodes clips of more than ``tile_sample_min_num_frames`` frames as
  overlapping temporal tiles, each blended into the previous one
  (``AutoencoderKLHunyuanVideo._temporal_tiled_decode``); ``hunyuanvideo_decode_steps`` is that
  loop, one tile per step, so a decode with gradients is checkpointed one tile at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rlr_video.backbones.base import DiffusersBackbone, check_frames, or_default, spatial_size
from rlr_video.backbones.causal_vae import CausalDecoding, CausalSteps
from rlr_video.backbones.family import LatentLayout, register_family
from rlr_video.backbones.layout import BackboneLoadError, Layout
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.text import PromptEncoder, TextConditioning

PIPELINE = "HunyuanVideoPipeline"
LLAMA_MAX_LENGTH = 256  # HunyuanVideoPipeline.__call__ max_sequence_length (prompt tokens after the crop)
CLIP_MAX_LENGTH = 77  # HunyuanVideoPipeline._get_clip_prompt_embeds
HIDDEN_LAYERS_TO_SKIP = 2  # HunyuanVideoPipeline._get_llama_prompt_embeds: hidden_states[-3]
DEFAULT_SIZE = (720, 1280, 129)  # HunyuanVideoPipeline.__call__ (height, width, frames)
DEFAULT_GUIDANCE = 6.0  # HunyuanVideoPipeline.__call__ guidance_scale (embedded)


def hunyuanvideo_decode_steps(vae, z: Tensor) -> CausalSteps:
    """``AutoencoderKLHunyuanVideo._decode``'s loop (diffusers 0.42): above
    ``tile_sample_min_num_frames`` frames, ``_temporal_tiled_decode``'s tiles of
    ``tile_sample_min_num_frames / 4 + 1`` latent frames every ``tile_sample_stride_num_frames / 4``;
    each decoded tile (less its first frame after the first tile) is blended into the last
    ``tile_sample_min_num_frames - tile_sample_stride_num_frames`` frames of the tile before it
    (``blend_t``) and cut to the stride. The cache carried from step to step is those last frames
    of the blended tile, which is what the diffusers loop reads of it. Below the tile size, one
    step decodes the whole clip."""
    ratio = vae.temporal_compression_ratio
    tile = vae.tile_sample_min_num_frames // ratio
    stride = vae.tile_sample_stride_num_frames // ratio
    stride_frames = vae.tile_sample_stride_num_frames
    blend = vae.tile_sample_min_num_frames - stride_frames
    frames = z.shape[2]
    if not (vae.use_framewise_decoding and frames > tile):
        return CausalSteps([z], lambda piece, cache, first: (vae.decoder(vae.post_quant_conv(piece)), cache), _same)

    def step(piece: Tensor, previous: Tensor | None, first: bool) -> tuple[Tensor, Tensor]:
        decoded = vae.decoder(vae.post_quant_conv(piece))
        if not first:
            decoded = vae.blend_t(previous, decoded[:, :, 1:].clone(), blend)  # blend_t writes into its second tensor
        keep = stride_frames + 1 if first else stride_frames
        return decoded[:, :, :keep], decoded[:, :, -blend:]

    sample_frames = (frames - 1) * ratio + 1
    pieces = [z[:, :, i : i + tile + 1] for i in range(0, frames, stride)]
    return CausalSteps(pieces, step, lambda video: video[:, :, :sample_frames])


def _same(video: Tensor) -> Tensor:
    return video


def _accepts(layout: Layout) -> bool:
    """Text-to-video layouts only: the image-to-video pipelines (HunyuanVideoImageToVideoPipeline,
    SkyReels) share the transformer class, with an ``image_condition_type`` or more input channels."""
    if layout.pipeline_class not in (None, PIPELINE):
        return False
    return (layout.config("transformer") or {}).get("image_condition_type") is None


class HunyuanVideoPromptEncoder(PromptEncoder):
    """Llama (template, two layers below the top, crop) and CLIP (pooled) as
    ``HunyuanVideoPipeline.encode_prompt`` runs them. ``text_encoder`` is a ``ModuleDict`` of
    both encoders, so the backbone moves, freezes and costs them together."""

    def __init__(self, tokenizer, text_encoder: nn.Module, tokenizer_2, text_encoder_2: nn.Module, max_length: int):
        super().__init__(tokenizer, nn.ModuleDict({"llama": text_encoder, "clip": text_encoder_2}), max_length)
        self.tokenizer_2 = tokenizer_2

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

        texts, device = list(texts), self.device
        crop = DEFAULT_PROMPT_TEMPLATE["crop_start"]
        tokens = self.tokenizer(
            [DEFAULT_PROMPT_TEMPLATE["template"].format(t) for t in texts],
            max_length=self.max_length + crop,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
            return_attention_mask=True,
        )
        mask = tokens.attention_mask.to(device)
        hidden = self.text_encoder["llama"](
            input_ids=tokens.input_ids.to(device), attention_mask=mask, output_hidden_states=True
        ).hidden_states[-(HIDDEN_LAYERS_TO_SKIP + 1)]
        clip = self.tokenizer_2(
            texts, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True, return_tensors="pt"
        )
        pooled = self.text_encoder["clip"](clip.input_ids.to(device), output_hidden_states=False).pooler_output
        return hidden[:, crop:], {"mask": mask[:, crop:], "pooled": pooled}

    def __call__(self, texts: Sequence[str]) -> Tensor:
        return self.encode(texts)[0]


@register_family(
    "hunyuanvideo",
    aliases=("hunyuan", "hunyuanvideo1", "hunyuan-video"),
    pipelines=(PIPELINE,),
    denoisers=(("transformer", "HunyuanVideoTransformer3DModel"),),
    accepts=_accepts,
    layout=LatentLayout(frame_axis=2, temporal_compression=4, frame_step=4),
    decoder="causal",
    denoiser_kind="transformer",
    shard_blocks=("HunyuanVideoTransformerBlock", "HunyuanVideoSingleTransformerBlock"),
    checkpoint_blocks=("HunyuanVideoTransformerBlock", "HunyuanVideoSingleTransformerBlock"),
    decode_steps=hunyuanvideo_decode_steps,
)
class HunyuanVideoBackbone(CausalDecoding, DiffusersBackbone):
    denoiser_component = "transformer"
    pipeline_class_name = PIPELINE  # HunyuanVideoLoraLoaderMixin writes and loads its LoRA files

    @classmethod
    def from_layout(cls, layout: Layout, options: BackboneOptions) -> HunyuanVideoBackbone:
        if options.negative_prompt:
            raise BackboneLoadError(
                f"negative_prompt={options.negative_prompt!r}: HunyuanVideo's guidance is distilled into the "
                f"model (guidance_scale is a model input, one call per step), so it takes no negative prompt"
            )
        dtype = options.dtype
        transformer = layout.load("transformer", "diffusers", "HunyuanVideoTransformer3DModel", torch_dtype=dtype)
        if not transformer.config.guidance_embeds:
            raise BackboneLoadError(
                f"{layout.root}/transformer has guidance_embeds=false; HunyuanVideoPipeline's text-to-video "
                "model embeds the guidance scale"
            )
        vae = layout.load("vae", "diffusers", "AutoencoderKLHunyuanVideo", torch_dtype=dtype)
        encoder = HunyuanVideoPromptEncoder(
            layout.load("tokenizer", "transformers", "LlamaTokenizerFast"),
            layout.load("text_encoder", "transformers", "LlamaModel", torch_dtype=dtype),
            layout.load("tokenizer_2", "transformers", "CLIPTokenizer"),
            layout.load("text_encoder_2", "transformers", "CLIPTextModel", torch_dtype=dtype),
            max_length=or_default(options.max_sequence_length, LLAMA_MAX_LENGTH),
        )
        from rlr_video.backbones.schedulers import flow_transition

        steps = options.num_steps
        transition = flow_transition(
            layout.load("scheduler", "diffusers", "FlowMatchEulerDiscreteScheduler"),
            steps,
            noise_level=options.stochasticity(0.7),
            shift=options.shift,
            sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1].tolist(),  # HunyuanVideoPipeline.__call__
        )
        scale, temporal = vae.spatial_compression_ratio, vae.temporal_compression_ratio
        default_h, default_w, default_f = DEFAULT_SIZE
        height, width = spatial_size(
            options, (default_h, default_w), scale * transformer.config.patch_size, layout.root
        )
        frames = options.num_frames or default_f
        latent_frames = check_frames(frames, temporal, layout.root)
        backbone = cls(
            transformer,
            encoder,
            vae,
            transition,
            options,
            latent_shape=(transformer.config.in_channels, latent_frames, height // scale, width // scale),
            guidance_scale=1.0,  # no classifier-free guidance: one call per step
            video_shape=(frames, height, width),
            source=layout.root,
        )
        backbone.embedded_guidance = float(or_default(options.guidance_scale, DEFAULT_GUIDANCE))
        return backbone

    # ------------------------------------------------------------------ VideoBackbone
    def encode(self, prompts: Sequence[str]) -> TextConditioning:
        """The prompts through both encoders in one batched call (no negative prompts)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("encode() needs at least one prompt")
        embeds, extras = self.prompt_encoder.encode(prompts)
        extras = {k: v.to(self.dtype) for k, v in extras.items()}  # as the pipeline casts them, the mask too
        return TextConditioning(embeds.to(self.dtype), False, prompts, extras).to(self.device)

    def predict(self, latents: Tensor, step: int, cond: TextConditioning) -> Tensor:
        """The velocity at chain step ``step``: one call, the guidance scale as a model input."""
        if cond.batch_size != latents.shape[0]:
            raise ValueError(f"conditioning for {cond.batch_size} prompts, latents for {latents.shape[0]} videos")
        t = self.transition.timestep(step).to(latents.device)
        b = latents.shape[0]
        guidance = torch.full((b,), self.embedded_guidance, dtype=self.dtype, device=latents.device) * 1000.0
        return self.denoiser(
            hidden_states=latents.to(self.dtype),
            timestep=t.expand(b).to(latents.dtype),  # the pipeline's timestep has the latents' float32
            encoder_hidden_states=cond.embeds,
            encoder_attention_mask=cond.extras["mask"],
            pooled_projections=cond.extras["pooled"],
            guidance=guidance,
            return_dict=False,
        )[0].to(latents.dtype)

    def vae_input(self, latents: Tensor) -> Tensor:
        return latents.to(self.vae.dtype) / self.vae.config.scaling_factor

    # ------------------------------------------------------------------ cost-model hooks
    def meta_conditioning(self, batch: int, text_length: int) -> TextConditioning:
        """``encode``'s conditioning for ``batch`` prompts on the meta device."""
        cfg = self.denoiser.config
        meta = dict(device="meta", dtype=self.dtype)
        extras = {
            "mask": torch.empty(batch, text_length, **meta),
            "pooled": torch.empty(batch, cfg.pooled_projection_dim, **meta),
        }
        return TextConditioning(
            torch.empty(batch, text_length, cfg.text_embed_dim, **meta), False, [""] * batch, extras
        )

    def __repr__(self) -> str:
        return super().__repr__().replace("guidance=1.0", f"embedded_guidance={self.embedded_guidance}")
