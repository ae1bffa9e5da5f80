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
  (``AutoencoderKLHunyuanVideo._temporal_tiled_decode``), and with ``vae_tiling`` each tile as
  overlapping spatial tiles (``tiled_decode``); ``hunyuanvideo_decode_steps`` is that loop, one
  tile per step, so a decode with gradients is checkpointed one tile at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rlr_video.backbones.base import DiffusersBackbone, check_frames, or_default, spatial_size
from rlr_video.backbones.causal_vae import CausalDecoding, CausalSteps
from rlr_video.backbones.family import LatentLayout, family_of, register_family
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
    """``AutoencoderKLHunyuanVideo._decode``'s work (diffusers 0.42) as steps, one decoder call each.

    Above ``tile_sample_min_num_frames`` frames the clip is cut into ``_temporal_tiled_decode``'s
    temporal tiles (``tile_sample_min_num_frames / 4 + 1`` latent frames every
    ``tile_sample_stride_num_frames / 4``); with ``vae.use_tiling`` each of those (or the whole
    clip) larger than a spatial tile is cut into ``tiled_decode``'s spatial tiles. A step decodes
    one tile (``post_quant_conv``, ``decoder``), zero-padded to the largest tile's size so that
    the steps' outputs line up along the frame axis. ``finish`` blends them as diffusers does:
    each temporal tile's spatial tiles (``blend_v``, ``blend_h``, in order, cut to the stride),
    then the temporal tiles (less their first frame after the first, ``blend_t`` into the blended
    tile before, cut to the stride), cut to the clip's frames. Each step's share of the work is
    its tile's size."""
    _, _, frames, height, width = z.shape
    ratio_t, ratio_s = vae.temporal_compression_ratio, vae.spatial_compression_ratio
    tile_t = vae.tile_sample_min_num_frames // ratio_t
    stride_t = vae.tile_sample_stride_num_frames // ratio_t
    temporal = vae.use_framewise_decoding and frames > tile_t
    t_pieces = [z[:, :, s : s + tile_t + 1] for s in range(0, frames, stride_t)] if temporal else [z]
    lat_h, lat_w = vae.tile_sample_min_height // ratio_s, vae.tile_sample_min_width // ratio_s
    stride_h, stride_w = vae.tile_sample_stride_height // ratio_s, vae.tile_sample_stride_width // ratio_s
    spatial = vae.use_tiling and (width > lat_w or height > lat_h)
    if spatial:
        grid = [[(i, j) for j in range(0, width, stride_w)] for i in range(0, height, stride_h)]
        pad_h, pad_w = vae.tile_sample_min_height, vae.tile_sample_min_width
    else:
        grid, pad_h, pad_w = [[(0, 0)]], height * ratio_s, width * ratio_s
    pieces, sizes, shapes = [], [], []
    for piece in t_pieces:
        for row in grid:
            for i, j in row:
                tile = piece[:, :, :, i : i + lat_h, j : j + lat_w] if spatial else piece
                pieces.append(tile)
                sizes.append((tile.shape[2] - 1) * ratio_t + 1)  # the causal decoder's frames
                shapes.append((tile.shape[-2] * ratio_s, tile.shape[-1] * ratio_s))

    def step(tile: Tensor, cache, first: bool) -> tuple[Tensor, None]:
        decoded = vae.decoder(vae.post_quant_conv(tile))
        return torch.nn.functional.pad(decoded, (0, pad_w - decoded.shape[-1], 0, pad_h - decoded.shape[-2])), cache

    def blend_space(tiles: list[Tensor]) -> Tensor:  # AutoencoderKLHunyuanVideo.tiled_decode's blending
        rows = [tiles[k * len(grid[0]) : (k + 1) * len(grid[0])] for k in range(len(grid))]
        blend_h = vae.tile_sample_min_height - vae.tile_sample_stride_height
        blend_w = vae.tile_sample_min_width - vae.tile_sample_stride_width
        out_rows = []
        for i, row in enumerate(rows):
            out_row = []
            for j, tile in enumerate(row):
                if i > 0:
                    tile = vae.blend_v(rows[i - 1][j], tile, blend_h)
                if j > 0:
                    tile = vae.blend_h(row[j - 1], tile, blend_w)
                out_row.append(tile[:, :, :, : vae.tile_sample_stride_height, : vae.tile_sample_stride_width])
            out_rows.append(torch.cat(out_row, dim=-1))
        return torch.cat(out_rows, dim=-2)[:, :, :, : height * ratio_s, : width * ratio_s]

    def finish(video: Tensor) -> Tensor:
        # the tiles without their padding, copied: the blend_* functions write in place
        tiles = [t[..., :h, :w].clone() for t, (h, w) in zip(video.split(sizes, dim=2), shapes)]
        per_clip = len(grid) * len(grid[0])
        clips = [tiles[k : k + per_clip] for k in range(0, len(tiles), per_clip)]
        clips = [blend_space(c) if spatial else c[0] for c in clips]
        if not temporal:
            return clips[0]
        blend = vae.tile_sample_min_num_frames - vae.tile_sample_stride_num_frames
        stride = vae.tile_sample_stride_num_frames
        row = [clip if k == 0 else clip[:, :, 1:] for k, clip in enumerate(clips)]
        out = []
        for k in range(len(row)):
            if k > 0:
                row[k] = vae.blend_t(row[k - 1], row[k], blend)
            out.append(row[k][:, :, : stride + 1 if k == 0 else stride])
        return torch.cat(out, dim=2)[:, :, : (frames - 1) * ratio_t + 1]

    return CausalSteps(pieces, step, finish, shares=[float(f * h * w) for f, (h, w) in zip(sizes, shapes)])


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
    takes_text_mask = True
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
        mask = extras.pop("mask")
        return TextConditioning(embeds.to(self.dtype), False, prompts, mask, extras).to(self.device)

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
            encoder_attention_mask=cond.mask,
            pooled_projections=cond.extras["pooled"],
            guidance=guidance,
            return_dict=False,
        )[0].to(latents.dtype)

    @property
    def decode_steps(self):
        """The VAE's tile loop (``hunyuanvideo_decode_steps``), spatial tiles included."""
        return family_of(self).decode_steps

    def vae_input(self, latents: Tensor) -> Tensor:
        return latents.to(self.vae.dtype) / self.vae.config.scaling_factor

    # ------------------------------------------------------------------ cost-model hooks
    def meta_conditioning(self, batch: int, text_length: int) -> TextConditioning:
        """``encode``'s conditioning for ``batch`` prompts on the meta device."""
        cfg = self.denoiser.config
        meta = dict(device="meta", dtype=self.dtype)
        embeds = torch.empty(batch, text_length, cfg.text_embed_dim, **meta)
        mask = torch.empty(batch, text_length, **meta)
        extras = {"pooled": torch.empty(batch, cfg.pooled_projection_dim, **meta)}
        return TextConditioning(embeds, False, [""] * batch, mask, extras)

    def __repr__(self) -> str:
        return super().__repr__().replace("guidance=1.0", f"embedded_guidance={self.embedded_guidance}")
