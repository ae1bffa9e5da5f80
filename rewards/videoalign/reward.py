"""``videoalign``: VideoAlign's VideoReward, a Qwen2-VL-2B reward model, differentiable w.r.t. the frames.

Reference: KwaiVGI/VideoAlign ``inference.py`` (``VideoVLMRewardInference.reward``) with
``vision_process.py``, ``prompt_template.py`` and ``trainer.py`` (``Qwen2VLRewardModelBT.forward``),
under its pinned transformers 4.45.2. One call does what ``reward(video_paths, prompts)`` does,
on frames already decoded:

1. frames sampled at the checkpoint's ``fps`` (2) from frames at ``video_fps``, resized by
   ``smart_resize`` within [128·28·28, ``max_frame_pixels``] (see :mod:`rewards.videoalign.frames`);
2. the prompt in the ``detailed_special`` template, character for character, in Qwen2-VL's chat
   template with one video, its placeholder expanded to the video's merged patch count, right padded;
3. the forward of ``Qwen2VLRewardModelBT``: token embeddings with the vision tower's features
   scattered into the video positions, the language model with *sequential* positions (that
   forward hands ``position_ids=None`` to the decoder, which in 4.45.2 numbers the tokens 0…L−1 on
   all three M-RoPE axes; Qwen2-VL's own 3-D video positions are never computed), the bias-free
   ``rm_head`` on the last hidden states, read at the three reward tokens: VQ, MQ, TA;
4. ``(x − mean) / std`` with the checkpoint's ``inference_config`` and Overall = VQ + MQ + TA.

Differences, all documented options: the uint8 rounding after the resize is a straight-through
step (``quantize=False`` drops it); attention is PyTorch SDPA (VideoAlign asks for
FlashAttention-2, the same function); the default dtype is VideoAlign's bf16 (``dtype="fp32"``
for exact comparisons). ``head`` picks the scalar reward; :meth:`VideoAlignReward.heads` gives all four.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from rewards.encoders import follow_device
from rewards.frames import check_frames
from rewards.loading import cached
from rewards.registry import register_reward
from rewards.videoalign.checkpoint import (
    DEFAULT_MODEL,
    VideoAlignConfig,
    checkpoint_dir,
    load_model,
    load_processor,
    load_tokenizer,
    resolve_folder,
    reward_model,
)
from rewards.videoalign.frames import PixelConfig, frame_plan, patchify, resize_frames
from rewards.videoalign.prompt import REWARD_TOKENS, TEMPLATES, build_prompt

HEADS = ("VQ", "MQ", "TA", "Overall")


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: Any
    processor: Any
    pixels: PixelConfig
    reward_ids: tuple[int, ...]


def _load(config: VideoAlignConfig, checkpoint: Any, dtype: str | None) -> Loaded:
    processor = load_processor(config.base)
    tokenizer = load_tokenizer(checkpoint, processor)
    ids = tuple(int(i) for i in tokenizer.convert_tokens_to_ids(list(REWARD_TOKENS)))
    if config.use_special_tokens and (tokenizer.unk_token_id in ids or len(set(ids)) != 3):
        raise ValueError(f"videoalign: the tokenizer lacks the reward tokens {REWARD_TOKENS} (ids {ids})")
    model = load_model(config, checkpoint, len(tokenizer), dtype)
    return Loaded(model, tokenizer, processor, PixelConfig.of(processor), ids)


@register_reward("videoalign")
class VideoAlignReward:
    """VideoAlign's VQ, MQ, TA and Overall for (B, F, 3, H, W) frames at ``video_fps``; the
    ``head`` option picks the scalar reward (default Overall)."""

    name = "videoalign"
    differentiable = True
    needs_prompts = True
    frame_sampling = "own"  # every frame, and their rate: VideoAlign samples by time itself
    takes_video_fps = True
    heads_names = HEADS

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        base: str | None = None,
        step: int | None = None,
        head: str = "Overall",
        video_fps: float | None = None,
        fps: float | None = None,
        num_frames: int | None = None,
        max_pixels: int | None = None,
        normalize: bool = True,
        quantize: bool = True,
        dtype: str | None = "bf16",
    ) -> None:
        if head not in HEADS:
            raise ValueError(f"videoalign: head must be one of {HEADS}, got {head!r}")
        folder = resolve_folder(model)
        config = VideoAlignConfig.read(folder / "model_config.json")
        config = replace(config, base=base) if base else config
        if config.sample_type != "uniform":
            raise ValueError(f"videoalign: data_config.sample_type {config.sample_type!r} is not supported (uniform)")
        if config.template not in TEMPLATES:
            build_prompt("", config.eval_dim, config.template)  # raises, naming the template
        if config.reward_token not in ("special", "last", "mean"):
            raise ValueError(f"videoalign: model_config.reward_token {config.reward_token!r} is unknown")
        checkpoint = checkpoint_dir(folder, step)
        key = ("videoalign", str(checkpoint.resolve()), config.base, dtype)
        self.loaded: Loaded = cached(key, lambda: _load(config, checkpoint, dtype))
        self.model = self.loaded.model  # the memory planner costs a reward's modules, never traces them
        self.config = config
        self.head = head
        self.video_fps = video_fps
        self.fps = float(fps) if fps is not None else config.fps
        self.num_frames = num_frames if num_frames is not None else config.num_frames
        self.max_pixels = int(max_pixels) if max_pixels is not None else config.max_pixels
        self.normalize = normalize
        self.quantize = quantize

    # ---------------------------------------------------------------- the reference's steps

    def frame_plan(self, count: int, height: int, width: int, video_fps: float | None = None) -> dict[str, Any]:
        """Which frames are read and the size they are resized to (``fetch_video``), and the
        vision tower's patch and token counts."""
        rate = video_fps if video_fps is not None else self.video_fps
        return frame_plan(count, height, width, rate, self.fps, self.num_frames, self.max_pixels, self.loaded.pixels)

    def input_sizes(self, count: int, height: int, width: int, video_fps: float | None = None) -> dict[str, Any]:
        """:meth:`frame_plan` plus the language model's sequence length for an empty prompt (a
        prompt adds its own tokens): what the memory planner needs with :meth:`model_dims`."""
        plan = self.frame_plan(count, height, width, video_fps)
        return {**plan, "text_tokens": len(self.tokenize([""], plan["vision_tokens"])["input_ids"][0])}

    def pixel_patches(self, frames: Tensor, size: tuple[int, int]) -> tuple[Tensor, tuple[int, int, int]]:
        """One video's sampled frames (N, 3, H, W) in [0, 1] → the vision tower's patches."""
        px = self.loaded.pixels
        pixels = resize_frames(frames, size, self.quantize) * (1 / 255)
        mean = torch.tensor(px.mean, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(px.std, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        return patchify((pixels - mean) / std, px.temporal, px.patch, px.merge)

    def tokenize(self, prompts: Sequence[str], video_tokens: int) -> dict[str, Tensor]:
        """The chat texts (one video each, its placeholder expanded), right padded."""
        processor, tokenizer = self.loaded.processor, self.loaded.tokenizer
        video_token = getattr(processor, "video_token", "<|video_pad|>")
        texts = []
        for prompt in prompts:
            text = build_prompt(prompt, self.config.eval_dim, self.config.template)
            chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
            rendered = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            if rendered.count(video_token) != 1:
                raise ValueError(f"videoalign: the chat template gave {rendered.count(video_token)} video placeholders")
            texts.append(rendered.replace(video_token, video_token * video_tokens))
        return tokenizer(texts, padding=True, return_tensors="pt")

    def logits(self, frames: Tensor, prompts: Sequence[str], video_fps: float | None = None) -> Tensor:
        """The reward head's (B, 3) outputs before normalisation (VQ, MQ, TA)."""
        check_frames(frames, prompts, self.name)
        batch, count, _, height, width = frames.shape
        plan = self.frame_plan(count, height, width, video_fps)
        model = self.loaded.model
        follow_device(model, frames.device)
        inner = reward_model(model)
        dtype = next(inner.parameters()).dtype
        chosen = frames[:, torch.tensor(plan["indices"], device=frames.device)]
        patches, grids = zip(*(self.pixel_patches(video, plan["size"]) for video in chosen))
        inputs = self.tokenize(prompts, plan["vision_tokens"]).to(frames.device)
        input_ids = inputs["input_ids"]
        core = inner.model
        embeds = core.language_model.embed_tokens(input_ids)
        grid_thw = torch.tensor(grids, device=frames.device)
        vision = core.visual(torch.cat(patches).to(dtype), grid_thw=grid_thw)
        vision = getattr(vision, "pooler_output", vision)
        video_mask = (input_ids == self._video_token_id())[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(video_mask, vision.to(embeds.dtype))
        # VideoAlign's forward leaves position_ids None: positions 0..L-1 on every M-RoPE axis.
        hidden = core.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).last_hidden_state
        logits = inner.rm_head(hidden)  # (B, L, output_dim)
        return self._pool(logits, input_ids).float()

    def heads(self, frames: Tensor, prompts: Sequence[str], video_fps: float | None = None) -> dict[str, Tensor]:
        """{"VQ", "MQ", "TA", "Overall"}, each (B,): normalised by the checkpoint's mean/std
        unless ``normalize=False``; Overall is their sum."""
        logits = self.logits(frames, prompts, video_fps)
        if logits.shape[1] < 3:
            raise ValueError(f"videoalign: the reward head gives {logits.shape[1]} outputs; VQ, MQ and TA need 3")
        out = {name: logits[:, i] for i, name in enumerate(HEADS[:3])}
        norm = self.config.norm
        if self.normalize and norm:
            out = {
                name: (value - float(norm[f"{name}_mean"])) / float(norm[f"{name}_std"]) for name, value in out.items()
            }
        out["Overall"] = out["VQ"] + out["MQ"] + out["TA"]
        return out

    def __call__(self, frames: Tensor, prompts: Sequence[str], video_fps: float | None = None) -> Tensor:
        return self.heads(frames, prompts, video_fps)[self.head]

    # ---------------------------------------------------------------- details

    def _video_token_id(self) -> int:
        processor = self.loaded.processor
        token_id = getattr(processor, "video_token_id", None)
        if token_id is None:
            token_id = self.loaded.tokenizer.convert_tokens_to_ids(getattr(processor, "video_token", "<|video_pad|>"))
        return int(token_id)

    def _pool(self, logits: Tensor, input_ids: Tensor) -> Tensor:
        """``Qwen2VLRewardModelBT``'s pooling: the reward tokens' outputs (``special``), the last
        token before the padding (``last``), or the mean over the tokens before it (``mean``)."""
        batch, length = input_ids.shape
        kind = self.config.reward_token
        if kind == "special":
            ids = torch.tensor(self.loaded.reward_ids, device=input_ids.device)
            mask = torch.isin(input_ids, ids)
            if (mask.sum(dim=1) != 3).any():
                raise ValueError(
                    f"videoalign: each text needs the three reward tokens once; counts {mask.sum(dim=1).tolist()} "
                    "(a prompt must not contain them)"
                )
            pooled = logits[mask].view(batch, 3, -1)
            if self.config.output_dim == 3:
                pooled = pooled.diagonal(dim1=1, dim2=2)
            return pooled.reshape(batch, -1)
        pad = self.loaded.tokenizer.pad_token_id
        last = (torch.eq(input_ids, pad).int().argmax(-1) - 1) % length
        if kind == "last":
            return logits[torch.arange(batch, device=logits.device), last]
        return torch.stack([logits[i, : int(last[i])].mean(dim=0) for i in range(batch)])

    def model_dims(self) -> dict[str, int]:
        """The vision tower's and the language model's sizes (for the memory planner)."""
        config = reward_model(self.loaded.model).config
        vision, text = config.vision_config, config.get_text_config()
        px = self.loaded.pixels
        return {
            "vision_layers": int(vision.depth),
            "vision_width": int(vision.embed_dim),
            "vision_heads": int(vision.num_heads),
            "vision_mlp": int(vision.embed_dim * vision.mlp_ratio),
            "vision_temporal": px.temporal,  # frames per patch
            "text_layers": int(text.num_hidden_layers),
            "text_width": int(text.hidden_size),
            "text_heads": int(text.num_attention_heads),
            "text_kv_heads": int(text.num_key_value_heads),
            "text_mlp": int(text.intermediate_size),
            "itemsize": int(math.ceil(torch.finfo(next(self.loaded.model.parameters()).dtype).bits / 8)),
        }

    @classmethod
    def sizes(cls, **options: Any) -> Any:
        """A weight-free stand-in with :meth:`input_sizes` and :meth:`model_dims` for the memory
        planner (``rlr-video plan`` without the weights): Qwen2-VL-2B's and VideoReward's numbers."""
        from rewards.videoalign.sizes import VideoAlignSizes

        return VideoAlignSizes(**options)

    def __repr__(self) -> str:
        return f"VideoAlignReward(head={self.head!r}, base={self.config.base!r})"
