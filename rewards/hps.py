"""``hpsv2``: Human Preference Score v2 (an open_clip ViT-H-14 fine-tuned on human choices).

Optional: it needs the HPS weights (``pretrained=``) as a local file (``HPS_v2.1_compressed.pt`` or
``HPS_v2_compressed.pt``) or as ``hf:xswu/HPSv2/HPS_v2.1_compressed.pt`` already in the Hugging
Face cache. The score is HPSv2's, averaged over frames.

Reference: tgxs002/HPSv2 ``hpsv2/img_score.py`` (``score``) with its eval transform,
``hpsv2/src/open_clip/transform.py`` (``image_transform(..., resize_longest_max=True)``):
``ToTensor`` first, then ``ResizeMaxSize(224)``: the longest side to 224 (the short side
``round(short · 224 / long)``) with torchvision's bicubic resize of the float tensor (antialiased,
the default since torchvision 0.17) and no clamp, centre padding with 0, OpenAI mean and std;
the score is the cosine of the normalised image and text features of open_clip ``ViT-H-14``
(GELU, not QuickGELU). HPSv2 runs under CUDA autocast; ``dtype="fp16"`` comes closer to that.
One case differs: a frame whose long side is already 224 but is not square is padded here, where
HPSv2's ``ResizeMaxSize`` returns it unpadded and the model then fails on its size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from torch import Tensor

from rewards.encoders import OpenClipEncoder
from rewards.frame_mean import FrameMeanReward
from rewards.loading import MissingWeightsError, resolve_file
from rewards.registry import register_reward

HOW = (
    "hpsv2 needs its weights: pass pretrained=/path/to/HPS_v2.1_compressed.pt "
    "(from the Hugging Face repo xswu/HPSv2) or pretrained=hf:xswu/HPSv2/HPS_v2.1_compressed.pt "
    "once it is in the Hugging Face cache."
)


FETCH = "hf download xswu/HPSv2 HPS_v2.1_compressed.pt, then pretrained=hf:xswu/HPSv2/HPS_v2.1_compressed.pt"


@register_reward("hpsv2")
class HPSv2Reward(FrameMeanReward):
    """Mean over frames of the HPSv2 score (cosine; typical values 0.2–0.35)."""

    name = "hpsv2"
    needs_prompts = True

    def __init__(
        self,
        pretrained: str | os.PathLike[str] | None = None,
        model: str = "ViT-H-14",
        dtype: str | None = None,
        chunk_size: int | None = 16,
        sample_frames: int | None = None,
        checkpoint: bool = False,
    ) -> None:
        super().__init__(chunk_size, sample_frames, checkpoint)
        if pretrained is None:
            raise MissingWeightsError(HOW, [("hpsv2 weights", FETCH)])
        path = resolve_file(pretrained, "HPSv2 weights", HOW)
        # The float tensor is resized and never clamped (HPSv2's ToTensor comes before its resize).
        self.encoder = OpenClipEncoder(model, str(path), resize_mode="longest", clamp=False, dtype=dtype)

    def encode_images(self, images: Tensor) -> Tensor:
        return self.encoder.encode_images(images)

    def score(self, features: Tensor, prompts: Sequence[str]) -> Tensor:
        text = self.encoder.encode_text(prompts, features.device)
        return (features * text[:, None, :]).sum(dim=-1)
