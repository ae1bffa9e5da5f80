"""Prompt encoding, as each family's diffusers pipeline does it, in one batched call.

``TextConditioning`` is what the diffusers backbones' ``encode`` returns: the negative
prompts' embeddings stacked before the prompts' (the order of the pipelines' CFG batch).
Two encoders cover the four families: CLIP (AnimateDiff, ModelScope/Zeroscope) and T5
(CogVideoX: no attention mask; Wan: UMT5 with a mask, trailing tokens zeroed). A denoiser that
takes the prompts' token mask itself (LTX-Video) gets it in ``TextConditioning.mask``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class TextConditioning:
    """Text embeddings for one batch of prompts.

    ``embeds`` is (2B, seq, dim) with the negative prompts' rows first when ``guided``
    (classifier-free guidance on), else (B, seq, dim). ``mask`` is the token mask (rows as
    ``embeds``, (rows, seq)) for a denoiser that takes one, else None.
    """

    embeds: Tensor
    guided: bool
    prompts: list[str]
    mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return len(self.prompts)

    def select(self, index: Sequence[int] | slice) -> TextConditioning:
        """The conditioning of a sub-batch (e.g. for micro-batching a replay)."""
        idx = list(range(self.batch_size))[index] if isinstance(index, slice) else list(index)
        rows = torch.tensor(idx, device=self.embeds.device)
        if self.guided:
            rows = torch.cat([rows, rows + self.batch_size])
        mask = None if self.mask is None else self.mask[rows.to(self.mask.device)]
        return TextConditioning(self.embeds[rows], self.guided, [self.prompts[i] for i in idx], mask)

    def to(self, device: torch.device | str) -> TextConditioning:
        mask = None if self.mask is None else self.mask.to(device)
        return TextConditioning(self.embeds.to(device), self.guided, self.prompts, mask)


class PromptEncoder:
    """Tokenizer + frozen text encoder; ``__call__(texts) -> (N, seq, dim)`` without grad, or
    ``(embeds, mask)`` for a denoiser that takes the token mask."""

    def __init__(self, tokenizer, text_encoder: nn.Module, max_length: int):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    def _tokens(self, texts: list[str], **kwargs):
        return self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
            **kwargs,
        )

    def __call__(self, texts: Sequence[str]) -> Tensor:
        raise NotImplementedError


class ClipPromptEncoder(PromptEncoder):
    """Stable-Diffusion-style CLIP encoding: last hidden state, padded to the tokenizer's
    ``model_max_length`` (``StableDiffusionPipeline.encode_prompt`` without clip skip)."""

    def __init__(self, tokenizer, text_encoder: nn.Module):
        super().__init__(tokenizer, text_encoder, tokenizer.model_max_length)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Tensor:
        tokens = self._tokens(list(texts))
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(self.device)
        return self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]


class T5PromptEncoder(PromptEncoder):
    """T5 encoding as CogVideoX (``masked=False``) and Wan (``masked=True``) do it.

    Wan passes the attention mask and zeroes the embeddings past each prompt's length
    (after cleaning whitespace and HTML entities the way its pipeline does); CogVideoX
    runs the padded sequence without a mask.
    """

    def __init__(self, tokenizer, text_encoder: nn.Module, max_length: int, masked: bool):
        super().__init__(tokenizer, text_encoder, max_length)
        self.masked = masked

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Tensor:
        texts = list(texts)
        if not self.masked:
            tokens = self._tokens(texts, add_special_tokens=True)
            return self.text_encoder(tokens.input_ids.to(self.device))[0]
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        tokens = self._tokens([prompt_clean(t) for t in texts], add_special_tokens=True, return_attention_mask=True)
        mask = tokens.attention_mask.to(self.device)
        hidden = self.text_encoder(tokens.input_ids.to(self.device), mask).last_hidden_state
        return hidden * mask.gt(0).unsqueeze(-1).to(hidden.dtype)


def encode_with_guidance(
    encoder: PromptEncoder, prompts: Sequence[str], negative_prompt: str, guided: bool, dtype: torch.dtype
) -> TextConditioning:
    """Negative prompts and prompts through the text encoder in one batched call."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("encode() needs at least one prompt")
    texts = [negative_prompt] * len(prompts) + prompts if guided else prompts
    encoded = encoder(texts)
    embeds, mask = encoded if isinstance(encoded, tuple) else (encoded, None)
    return TextConditioning(embeds.to(dtype), guided, prompts, mask)
