"""HunyuanVideo 1.5 text-to-video: ``HunyuanVideo15Transformer3DModel``, its causal 3D VAE,
Qwen2.5-VL and byT5 text encoders (diffusers 0.42 ``HunyuanVideo15Pipeline``).

- Text: each prompt goes through Qwen2.5-VL's chat template with the pipeline's system message;
  the hidden state two layers below the top is kept, less the template's first 108 tokens, with
  its mask. Text in quotes ("..." or “...”) also goes through the byT5 glyph encoder; a prompt
  without quotes gets byT5 zeros and a zero mask. Both are the pipeline's own static encoders
  (``_get_mllm_prompt_embeds``, ``_get_byt5_prompt_embeds``), called with its lengths: 1000
  prompt tokens (``max_sequence_length``) and 256 glyph tokens (fewer when
  ``max_sequence_length`` is smaller; the pipeline's ``tokenizer_2_max_length``).
- Guidance: the layout's ``guider`` (``ClassifierFreeGuidance``: its scale, rescale, formulation
  and start / stop fractions) combines the conditional and unconditional predictions, as the
  pipeline has it do; ``guidance_scale`` replaces the guider's scale (``guider.new``).
- Chain: the flow-matching SDE over the scheduler's shift of ``linspace(1, 0, T + 1)[:-1]``, the
  sigmas the pipeline passes (not the scheduler's default spacing); at noise level 0 it is the
  pipeline's Euler sampler.
- Denoiser input (text-to-video): the latents, zero condition latents and a zero mask channel
  concatenated, and zero image embeddings (``vision_num_semantic_tokens`` = 729), which the
  transformer masks out.
- Decoding: the VAE decodes a clip in one call (its mid block attends over all frames), one
  video at a time: in diffusers 0.42.1 its attention mask breaks on a batch of two. With
  ``vae_tiling`` (``vae.enable_tiling()``, as the pipeline's example runs it) it decodes
  overlapping spatial tiles and blends them (``tiled_decode``); ``hunyuanvideo15_decode_steps``
  is that loop, so a decode with gradients is checkpointed one tile at a time (untiled: one
  step, the whole clip).

On the meta device (``rlr-video plan``) the transformer's forward cannot run as written: it
reorders the text tokens by their masks with boolean indexing and branches on the image
embeddings' values. ``_meta_forward`` runs the same modules in the same order with all masks
full, for which the reordering is the concatenation it uses (``tests/test_hunyuan.py`` checks
that it equals the forward on real tensors).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rlr_video.backbones.base import DiffusersBackbone, check_frames, or_default, spatial_size
from rlr_video.backbones.causal_vae import CausalSteps, decode_causal
from rlr_video.backbones.family import LatentLayout, family_of, register_family
from rlr_video.backbones.layout import Layout
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.text import PromptEncoder, TextConditioning
from rlr_video.backbones.vae import to_unit_range

PIPELINE = "HunyuanVideo15Pipeline"
TEMPLATE_CROP = 108  # HunyuanVideo15Pipeline.prompt_template_encode_start_idx
QWEN_MAX_LENGTH = 1000  # HunyuanVideo15Pipeline.tokenizer_max_length (prompt tokens after the crop)
BYT5_MAX_LENGTH = 256  # HunyuanVideo15Pipeline.tokenizer_2_max_length
VISION_TOKENS = 729  # HunyuanVideo15Pipeline.vision_num_semantic_tokens (zeros for text-to-video)
DEFAULT_FRAMES = 121  # HunyuanVideo15Pipeline.__call__
DEFAULT_ASPECT = (9, 16)  # (height, width): HunyuanVideo15Pipeline.default_aspect_ratio, (16, 9) as w:h


def hunyuanvideo15_decode_steps(vae, z: Tensor) -> CausalSteps:
    """``AutoencoderKLHunyuanVideo15._decode``'s work (diffusers 0.42) as steps: untiled, one step
    (the decoder on the whole clip); tiled (``vae.use_tiling`` and a frame larger than a tile),
    ``tiled_decode``'s tiles of ``tile_latent_min_*`` latents every ``1 - tile_overlap_factor``
    of a tile, one per step. A step's tile is zero-padded to the full tile size so that the steps'
    outputs line up along the frame axis; ``finish`` takes the padding off and blends the tiles
    (``blend_v``, ``blend_h``, in ``tiled_decode``'s order: each tile with its upper and left
    neighbours as already blended) and cuts them to the tile stride. Each step's share of the
    work is its tile's area."""
    _, _, frames, height, width = z.shape
    tile_h, tile_w = vae.tile_latent_min_height, vae.tile_latent_min_width
    if not (vae.use_tiling and (width > tile_w or height > tile_h)):
        return CausalSteps([z], lambda piece, cache, first: (vae.decoder(piece), cache), _same)
    stride_h = int(tile_h * (1 - vae.tile_overlap_factor))
    stride_w = int(tile_w * (1 - vae.tile_overlap_factor))
    sample_h, sample_w = vae.tile_sample_min_height, vae.tile_sample_min_width
    blend_h, blend_w = int(sample_h * vae.tile_overlap_factor), int(sample_w * vae.tile_overlap_factor)
    rows = [[(i, j) for j in range(0, width, stride_w)] for i in range(0, height, stride_h)]
    pieces = [z[:, :, :, i : i + tile_h, j : j + tile_w] for row in rows for i, j in row]
    scale = vae.spatial_compression_ratio
    shapes = [(p.shape[-2] * scale, p.shape[-1] * scale) for p in pieces]

    def step(piece: Tensor, cache, first: bool) -> tuple[Tensor, None]:
        tile = vae.decoder(piece)
        return torch.nn.functional.pad(tile, (0, sample_w - tile.shape[-1], 0, sample_h - tile.shape[-2])), cache

    def finish(video: Tensor) -> Tensor:
        per_tile = video.shape[2] // len(pieces)
        tiles = [
            t[..., :h, :w].clone() for t, (h, w) in zip(video.split(per_tile, dim=2), shapes)
        ]  # blend_* write in place
        grid = [tiles[k * len(rows[0]) : (k + 1) * len(rows[0])] for k in range(len(rows))]
        out_rows = []
        for i, row in enumerate(grid):
            out_row = []
            for j, tile in enumerate(row):
                if i > 0:
                    tile = vae.blend_v(grid[i - 1][j], tile, blend_h)
                if j > 0:
                    tile = vae.blend_h(row[j - 1], tile, blend_w)
                out_row.append(tile[:, :, :, : sample_h - blend_h, : sample_w - blend_w])
            out_rows.append(torch.cat(out_row, dim=-1))
        return torch.cat(out_rows, dim=-2)

    return CausalSteps(pieces, step, finish, shares=[float(h * w) for h, w in shapes])


def _same(video: Tensor) -> Tensor:
    return video


def _accepts(layout: Layout) -> bool:
    """Text-to-video layouts only (the image-to-video pipeline shares the transformer class)."""
    return layout.pipeline_class in (None, PIPELINE)


class HunyuanVideo15PromptEncoder(PromptEncoder):
    """Qwen2.5-VL (template, two layers below the top, crop) and byT5 (quoted text) as
    ``HunyuanVideo15Pipeline.encode_prompt`` runs them; ``__call__`` returns the Qwen embeddings
    and ``encode`` also the masks and the byT5 embeddings of the same rows.

    ``text_encoder`` is a ``ModuleDict`` of both encoders, so the backbone moves, freezes and
    costs them together."""

    def __init__(
        self,
        tokenizer,
        text_encoder: nn.Module,
        tokenizer_2,
        text_encoder_2: nn.Module,
        max_length: int,
        max_length_2: int,
    ):
        super().__init__(tokenizer, nn.ModuleDict({"qwen": text_encoder, "byt5": text_encoder_2}), max_length)
        self.tokenizer_2, self.max_length_2 = tokenizer_2, max_length_2

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
        from diffusers import HunyuanVideo15Pipeline as Pipeline

        texts, device = list(texts), self.device
        embeds, mask = Pipeline._get_mllm_prompt_embeds(
            text_encoder=self.text_encoder["qwen"],
            tokenizer=self.tokenizer,
            prompt=texts,
            device=device,
            tokenizer_max_length=self.max_length,
            crop_start=TEMPLATE_CROP,
        )
        embeds_2, mask_2 = Pipeline._get_byt5_prompt_embeds(
            tokenizer=self.tokenizer_2,
            text_encoder=self.text_encoder["byt5"],
            prompt=texts,
            device=device,
            tokenizer_max_length=self.max_length_2,
        )
        return embeds, {"mask": mask, "embeds_2": embeds_2, "mask_2": mask_2}

    def __call__(self, texts: Sequence[str]) -> Tensor:
        return self.encode(texts)[0]


@register_family(
    "hunyuanvideo15",
    aliases=("hunyuanvideo1.5", "hunyuan15", "hunyuan-video-1.5"),
    pipelines=(PIPELINE,),
    denoisers=(("transformer", "HunyuanVideo15Transformer3DModel"),),
    accepts=_accepts,
    layout=LatentLayout(frame_axis=2, temporal_compression=4, frame_step=4),
    decoder="whole",  # the whole clip in one decoder call (or spatial tiles, see decode_steps)
    denoiser_kind="transformer",
    shard_blocks=("HunyuanVideo15TransformerBlock",),
    checkpoint_blocks=("HunyuanVideo15TransformerBlock",),
    decode_steps=hunyuanvideo15_decode_steps,
)
class HunyuanVideo15Backbone(DiffusersBackbone):
    denoiser_component = "transformer"
    takes_text_mask = True
    # HunyuanVideo15Pipeline has no LoRA mixin in diffusers 0.42: the file is written in the
    # diffusers layout by hand and loads with ``pipe.transformer.load_lora_adapter(path)``.
    pipeline_class_name = ""

    @classmethod
    def from_layout(cls, layout: Layout, options: BackboneOptions) -> HunyuanVideo15Backbone:
        dtype = options.dtype
        transformer = layout.load("transformer", "diffusers", "HunyuanVideo15Transformer3DModel", torch_dtype=dtype)
        vae = layout.load("vae", "diffusers", "AutoencoderKLHunyuanVideo15", torch_dtype=dtype)
        channels = vae.config.latent_channels
        if transformer.config.in_channels != 2 * channels + 1:
            from rlr_video.backbones.layout import BackboneLoadError

            raise BackboneLoadError(
                f"{layout.root}/transformer: in_channels={transformer.config.in_channels}, expected "
                f"{2 * channels + 1} (the VAE's {channels} latent channels, as many condition channels and a mask)"
            )
        encoder = HunyuanVideo15PromptEncoder(
            layout.load("tokenizer", "transformers", "Qwen2Tokenizer"),
            layout.load("text_encoder", "transformers", "Qwen2_5_VLTextModel", torch_dtype=dtype),
            layout.load("tokenizer_2", "transformers", "ByT5Tokenizer"),
            layout.load("text_encoder_2", "transformers", "T5EncoderModel", torch_dtype=dtype),
            max_length=or_default(options.max_sequence_length, QWEN_MAX_LENGTH),
            # a shorter text budget shortens the glyph text too (the pipeline's tokenizer_2_max_length)
            max_length_2=min(BYT5_MAX_LENGTH, or_default(options.max_sequence_length, BYT5_MAX_LENGTH)),
        )
        guider = layout.load("guider", "diffusers", "ClassifierFreeGuidance")
        if options.guidance_scale is not None:
            guider = guider.new(guidance_scale=float(options.guidance_scale))
        from rlr_video.backbones.schedulers import flow_transition

        steps = options.num_steps
        transition = flow_transition(
            layout.load("scheduler", "diffusers", "FlowMatchEulerDiscreteScheduler"),
            steps,
            noise_level=options.stochasticity(0.7),
            shift=options.shift,
            sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1].tolist(),  # HunyuanVideo15Pipeline.__call__
        )
        scale, temporal = vae.spatial_compression_ratio, vae.temporal_compression_ratio
        patch = transformer.config.patch_size
        height, width = spatial_size(options, _default_size(transformer, scale), scale * patch, layout.root)
        frames = options.num_frames or DEFAULT_FRAMES
        latent_frames = check_frames(frames, temporal, layout.root)
        backbone = cls(
            transformer,
            encoder,
            vae,
            transition,
            options,
            latent_shape=(channels, latent_frames, height // scale, width // scale),
            guidance_scale=guider.guidance_scale,
            video_shape=(frames, height, width),
            source=layout.root,
        )
        backbone.guider = guider
        # Whether any step runs the unconditional branch: the guider is on and its scale does
        # something (asked before any step state is set); steps outside its start / stop
        # fractions run only the conditional one.
        backbone.guided = guider.num_conditions > 1
        return backbone

    def encode(self, prompts: Sequence[str]) -> TextConditioning:
        """Negative prompts (the pipeline's default: empty) and prompts in one batched call."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("encode() needs at least one prompt")
        guided = self.guided
        texts = [self.negative_prompt] * len(prompts) + prompts if guided else prompts
        embeds, extras = self.prompt_encoder.encode(texts)
        extras = {k: v.to(self.dtype) for k, v in extras.items()}  # as encode_prompt casts them, masks too
        mask = extras.pop("mask")
        return TextConditioning(embeds.to(self.dtype), guided, prompts, mask, extras).to(self.device)

    def predict(self, latents: Tensor, step: int, cond: TextConditioning) -> Tensor:
        """The velocity at chain step ``step``, combined by the guider as the pipeline's loop does."""
        if cond.batch_size != latents.shape[0]:
            raise ValueError(f"conditioning for {cond.batch_size} prompts, latents for {latents.shape[0]} videos")
        t = self.transition.timestep(step).to(latents.device)
        x = latents.to(self.dtype)
        self.guider.set_state(step=self.num_steps - step, num_inference_steps=self.num_steps, timestep=t)
        if cond.guided and self.guider.num_conditions > 1:
            uncond, text = self._denoise(torch.cat([x, x]), t, cond).float().chunk(2)
            return self.guider.forward(pred_cond=text, pred_uncond=uncond).pred.to(latents.dtype)
        if cond.guided:  # the prompts' rows only
            rows = slice(cond.batch_size, None)
            extras = {k: v[rows] for k, v in cond.extras.items()}
            cond = TextConditioning(cond.embeds[rows], False, cond.prompts, cond.mask[rows], extras)
        text = self._denoise(x, t, cond).float()
        return self.guider.forward(pred_cond=text).pred.to(latents.dtype)

    # Decoder steps (tiles) per checkpoint while gradients are recorded; None: one plain decode
    # per video. The memory options set it (``rlr_video.memory.recompute``).
    decode_checkpoint_chunk: int | None = None

    @property
    def decode_steps(self):
        """The VAE's decoding loop (``hunyuanvideo15_decode_steps``: one step, or spatial tiles)."""
        return family_of(self).decode_steps

    def decode(self, latents: Tensor) -> Tensor:
        """Frames (B, F, 3, H, W) in [0, 1], one video per VAE call; differentiable."""
        z = self.vae_input(latents)
        if self.decode_checkpoint_chunk is not None and torch.is_grad_enabled():
            video = decode_causal(self.vae, z, self.decode_checkpoint_chunk, self.decode_steps)  # per video
        else:
            video = torch.cat([self.vae.decode(v, return_dict=False)[0] for v in z.split(1)])
        return to_unit_range(video.permute(0, 2, 1, 3, 4))

    def vae_input(self, latents: Tensor) -> Tensor:
        """The latents as the VAE takes them (unscaled, as the pipeline does)."""
        return latents.to(self.vae.dtype) / self.vae.config.scaling_factor

    # ------------------------------------------------------------------ family hooks
    def _denoise(self, x: Tensor, t: Tensor, cond: TextConditioning) -> Tensor:
        b, c, f, h, w = x.shape
        # text-to-video: zero condition latents and mask channel, zero image embeddings
        hidden = torch.cat([x, x.new_zeros(b, c, f, h, w), x.new_zeros(b, 1, f, h, w)], dim=1)
        image = x.new_zeros(b, VISION_TOKENS, self.denoiser.config.image_embed_dim)
        kwargs = dict(
            hidden_states=hidden,
            timestep=t.expand(b).to(x.dtype),
            encoder_hidden_states=cond.embeds,
            encoder_attention_mask=cond.mask,
            encoder_hidden_states_2=cond.extras["embeds_2"],
            encoder_attention_mask_2=cond.extras["mask_2"],
            image_embeds=image,
        )
        if x.device.type == "meta":
            return _meta_forward(self.denoiser, **kwargs)
        return self.denoiser(**kwargs, return_dict=False)[0]

    # ------------------------------------------------------------------ cost-model hooks
    def meta_conditioning(self, batch: int, text_length: int) -> TextConditioning:
        """``encode``'s conditioning for ``batch`` prompts on the meta device: ``text_length``
        Qwen tokens and the byT5 tokens, their masks full (see ``_meta_forward``)."""
        cfg = self.denoiser.config
        rows = 2 * batch if self.guided else batch
        meta = dict(device="meta", dtype=self.dtype)
        extras = {
            "embeds_2": torch.empty(rows, self.prompt_encoder.max_length_2, cfg.text_embed_2_dim, **meta),
            "mask_2": torch.empty(rows, self.prompt_encoder.max_length_2, **meta),
        }
        embeds = torch.empty(rows, text_length, cfg.text_embed_dim, **meta)
        mask = torch.empty(rows, text_length, **meta)
        return TextConditioning(embeds, self.guided, [""] * batch, mask, extras)


def _default_size(transformer, scale: int) -> tuple[int, int]:
    """The pipeline's default (height, width): the 16:9 bucket of the transformer's ``target_size``."""
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

    processor = HunyuanVideo15ImageProcessor(vae_scale_factor=scale)
    height, width = processor.calculate_default_height_width(*DEFAULT_ASPECT, transformer.config.target_size)
    return int(height), int(width)


def _meta_forward(
    model,
    hidden_states: Tensor,
    timestep: Tensor,
    encoder_hidden_states: Tensor,
    encoder_attention_mask: Tensor,
    encoder_hidden_states_2: Tensor,
    encoder_attention_mask_2: Tensor,
    image_embeds: Tensor,
) -> Tensor:
    """``HunyuanVideo15Transformer3DModel.forward`` (diffusers 0.42) for text-to-video with full
    text masks, without its data-dependent steps, so that it runs on meta tensors: the same
    modules, called in the same order on tensors of the same shapes. With full masks the
    forward's reordering ([valid image, valid byT5, valid Qwen, invalid image, invalid byT5,
    invalid Qwen]) is the concatenation [byT5, Qwen, image] and its joint mask [1, 1, 0]."""
    b, _, frames, height, width = hidden_states.shape
    cfg = model.config
    p_t, p = cfg.patch_size_t, cfg.patch_size
    rotary = model.rope(hidden_states)
    temb = model.time_embed(timestep)
    hidden_states = model.x_embedder(hidden_states)
    text = model.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)
    text = text + model.cond_type_embed(torch.zeros_like(text[:, :, 0], dtype=torch.long))
    text_2 = model.context_embedder_2(encoder_hidden_states_2)
    text_2 = text_2 + model.cond_type_embed(torch.ones_like(text_2[:, :, 0], dtype=torch.long))
    image = model.image_embedder(image_embeds) * 0.0  # text-to-video: the image tokens are zeroed
    image = image + model.cond_type_embed(2 * torch.ones_like(image[:, :, 0], dtype=torch.long))
    context = torch.cat([text_2, text, image], dim=1)
    mask = torch.cat(
        [
            encoder_attention_mask_2.bool(),
            encoder_attention_mask.bool(),
            torch.zeros(b, image.shape[1], dtype=torch.bool, device=image.device),
        ],
        dim=1,
    )
    for block in model.transformer_blocks:
        args = (hidden_states, context, temb, mask, rotary)
        if torch.is_grad_enabled() and model.gradient_checkpointing:
            hidden_states, context = model._gradient_checkpointing_func(block, *args)
        else:
            hidden_states, context = block(*args)
    hidden_states = model.proj_out(model.norm_out(hidden_states, temb))
    hidden_states = hidden_states.reshape(b, frames // p_t, height // p, width // p, -1, p_t, p, p)
    hidden_states = hidden_states.permute(0, 4, 1, 5, 2, 6, 3, 7)
    return hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)
