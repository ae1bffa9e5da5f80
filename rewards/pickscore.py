"""``pickscore``: PickScore (CLIP ViT-H-14 fine-tuned on Pick-a-Pic preferences), via transformers.

Optional: ``model`` is a local folder (or a hub id already in the Hugging Face cache) holding
``yuvalkirstain/PickScore_v1``; ``processor`` the folder with the tokenizer and image processor
(``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``), by default ``model`` itself. The score is PickScore's:
``logit_scale.exp() · cos(image, text)`` (about 18–23 for real images), averaged over frames.

Reference: yuvalkirstain/PickScore ``README.md`` (``calc_probs``) with the Hugging Face
``CLIPProcessor`` it loads: the short side to 224 (bicubic; the long side
``int(224 · long / short)``), the centre crop at ``(H − 224) // 2`` (floored, where torchvision's
``CenterCrop`` rounds: they differ for odd margins, e.g. 576×320 and 848×480 frames), OpenAI
mean and std; text padded and truncated to 77 tokens. The processor resizes 8-bit images
(Pillow in transformers < 5, torchvision's uint8 kernel since), which ``resize="pil"`` reproduces
(see :mod:`rewards.preprocess`); ``"smooth"`` skips the rounding, for training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rewards.encoders import follow_device
from rewards.frame_mean import FrameMeanReward
from rewards.loading import MissingWeightsError, cached, freeze
from rewards.preprocess import ImagePreprocess, resize_style, to_device_dtype
from rewards.registry import register_reward

HOW = (
    "pickscore needs local weights: pass model=/path/to/PickScore_v1 (the folder of the Hugging "
    "Face repo yuvalkirstain/PickScore_v1) and processor=/path/to/CLIP-ViT-H-14-laion2B-s32B-b79K "
    "(tokenizer and preprocessor_config.json) unless the model folder holds them."
)

ITEMS = [
    (
        "pickscore weights",
        "hf download yuvalkirstain/PickScore_v1 and laion/CLIP-ViT-H-14-laion2B-s32B-b79K, then model= processor=",
    )
]


def _features(output: Any) -> Tensor:
    """transformers < 5 returns the projected embeddings; 5.x wraps them in ``pooler_output``."""
    return output if isinstance(output, Tensor) else output.pooler_output


def _load(model: str, processor: str) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModel, AutoProcessor

    try:
        proc = AutoProcessor.from_pretrained(processor)
        net = AutoModel.from_pretrained(model)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MissingWeightsError(f"PickScore files not found ({reason}). {HOW}", ITEMS) from err
    return freeze(net), proc


@register_reward("pickscore")
class PickScoreReward(FrameMeanReward):
    """Mean over frames of PickScore."""

    name = "pickscore"
    needs_prompts = True

    def __init__(
        self,
        model: str | None = None,
        processor: str | None = None,
        resize: str = "pil",
        chunk_size: int | None = 16,
        sample_frames: int | None = None,
        checkpoint: bool = False,
    ) -> None:
        super().__init__(chunk_size, sample_frames, checkpoint)
        rounding, clamp = resize_style(resize, self.name)
        if model is None:
            raise MissingWeightsError(HOW, ITEMS)
        processor = processor or model
        self.model, proc = cached(("pickscore", model, processor), lambda: _load(model, processor))
        self.tokenizer = proc.tokenizer
        self.preprocess = ImagePreprocess.from_hf(proc.image_processor, rounding, clamp)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def encode_images(self, images: Tensor) -> Tensor:
        follow_device(self.model, images.device)
        pixels = to_device_dtype(self.preprocess(images), self.model)
        return F.normalize(_features(self.model.get_image_features(pixel_values=pixels)), dim=-1)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str], device: torch.device) -> Tensor:
        tokens = self.tokenizer(
            list(prompts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(device)
        return F.normalize(_features(self.model.get_text_features(**tokens)), dim=-1)

    def score(self, features: Tensor, prompts: Sequence[str]) -> Tensor:
        text = self.encode_text(prompts, features.device)
        scale = self.model.logit_scale.exp().to(features.dtype)
        return scale * (features.float() * text.float()[:, None, :]).sum(dim=-1)
