"""``clip``: text–video alignment, CLIPScore-style.

The mean over frames of the cosine between each frame's CLIP image embedding and the prompt's
text embedding (open_clip; any model and pretrained tag or file). ``scale`` multiplies the
cosine (CLIPScore reports 2.5·max(cos, 0); the clamp is left out here to keep gradients).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from rewards.encoders import OpenClipEncoder
from rewards.frame_mean import FrameMeanReward
from rewards.registry import register_reward


@register_reward("clip")
class ClipReward(FrameMeanReward):
    """Mean over frames of ``scale · cos(image(frame), text(prompt))``."""

    name = "clip"
    needs_prompts = True

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        scale: float = 1.0,
        quick_gelu: bool | None = None,
        resize_mode: str | None = None,
        dtype: str | None = None,
        chunk_size: int | None = 16,
        sample_frames: int | None = None,
        checkpoint: bool = False,
    ) -> None:
        super().__init__(chunk_size, sample_frames, checkpoint)
        self.scale = float(scale)
        self.encoder = OpenClipEncoder(model, pretrained, resize_mode=resize_mode, quick_gelu=quick_gelu, dtype=dtype)

    def encode_images(self, images: Tensor) -> Tensor:
        return self.encoder.encode_images(images)

    def score(self, features: Tensor, prompts: Sequence[str]) -> Tensor:
        text = self.encoder.encode_text(prompts, features.device)  # (B, D)
        return self.scale * (features * text[:, None, :]).sum(dim=-1)
