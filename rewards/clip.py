"""``clip``: text–video alignment, CLIPScore-style.

With an image CLIP (any open_clip model and pretrained tag or file) the score is the mean over
frames of the cosine between each frame's image embedding and the prompt's text embedding.

With a *video* CLIP, one whose open_clip folder says it reads frame grids (the testbed's
``model: shapes-clip``, or ``model: local-dir:/path`` to such a folder), the whole video is
one image, a contact sheet of its frames, so the score also sees motion direction, which a
mean over frames cannot.

``scale`` multiplies the cosine (CLIPScore reports 2.5·max(cos, 0); the clamp is left out here
to keep gradients).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from rewards.encoders import OpenClipEncoder, follow_device
from rewards.frame_mean import FrameMeanReward
from rewards.frames import check_frames
from rewards.loading import cached, freeze
from rewards.registry import register_reward
from rlr_video.testbed.clip import CaptionWordReward, load_shapes_clip, video_clip_folder


@register_reward("clip")
class ClipReward(FrameMeanReward):
    """Mean over frames of ``scale · cos(image(frame), text(prompt))``, or with a video CLIP
    ``scale · cos(video(frames), text(prompt))``."""

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
        folder = video_clip_folder(model)
        if folder is None:
            self.video_clip = None
            self.encoder = OpenClipEncoder(
                model, pretrained, resize_mode=resize_mode, quick_gelu=quick_gelu, dtype=dtype
            )
        else:
            self.video_clip = cached(("video_clip", str(folder.resolve())), lambda: freeze(load_shapes_clip(folder)))

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        if self.video_clip is None:
            return super().__call__(frames, prompts)
        check_frames(frames, prompts, self.name)
        follow_device(self.video_clip, frames.device)
        return self.scale * self.video_clip(frames.float(), prompts)

    def encode_images(self, images: Tensor) -> Tensor:
        return self.encoder.encode_images(images)

    def score(self, features: Tensor, prompts: Sequence[str]) -> Tensor:
        text = self.encoder.encode_text(prompts, features.device)  # (B, D)
        return self.scale * (features * text[:, None, :]).sum(dim=-1)


def clip_words(
    model: str = "shapes-clip",
    attributes: Sequence[str] | None = None,
    target: Mapping[str, str] | None = None,
    temperature: float = 1.0,
) -> CaptionWordReward:
    """The testbed's per-word caption reward (:class:`~rlr_video.testbed.clip.CaptionWordReward`)
    read by a video CLIP folder; ``target: {direction: right}`` rewards that word whatever the
    prompt says."""
    folder = video_clip_folder(model)
    if folder is None:
        raise ValueError(f"clip_words: model {model!r} is not a video CLIP folder (try 'shapes-clip')")
    clip = cached(("video_clip", str(folder.resolve())), lambda: freeze(load_shapes_clip(folder)))
    return CaptionWordReward(clip, attributes, target, temperature)


register_reward("clip_words", factory=clip_words)
