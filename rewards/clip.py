"""``clip``: text–video alignment, CLIPScore-style.

With an image CLIP (any open_clip model and pretrained tag or file) the score is the mean over
frames of the cosine between each frame's image embedding and the prompt's text embedding.

With a *video* CLIP, a model name a plugin resolves (``register_video_clip``; the testbed's
``model: shapes-clip``, or ``model: local-dir:/path`` to such a folder, which reads a video as a
contact sheet of its frames), the score is the cosine of the whole video, so it also sees motion
direction, which a mean over frames cannot.

``scale`` multiplies the cosine (CLIPScore reports 2.5·max(cos, 0); the clamp is left out here
to keep gradients).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from rewards.encoders import OpenClipEncoder, follow_device
from rewards.frame_mean import FrameMeanReward
from rewards.frames import check_frames
from rewards.loading import cached, freeze
from rewards.registry import load_plugins, register_reward

# Whole-video CLIPs by model name, registered by plugins (the testbed's frame-grid ``shapes-clip``):
# ``resolver(model) -> (cache key, load)`` or None when ``model`` is not theirs.
VideoClipResolver = Callable[[str], "tuple[str, Callable[[], nn.Module]] | None"]
_VIDEO_CLIPS: list[VideoClipResolver] = []


def register_video_clip(resolver: VideoClipResolver) -> VideoClipResolver:
    """Register a resolver of video CLIP model names: ``build_reward("clip", model=NAME)`` asks
    each in turn; a model that returns ``(key, load)`` is loaded once per key and scores whole
    videos (``model(frames, prompts) -> (B,)`` cosines), not frames."""
    _VIDEO_CLIPS.append(resolver)
    return resolver


def video_clip(model: str) -> tuple[str, Callable[[], nn.Module]] | None:
    """``(cache key, load)`` of the video CLIP ``model`` names, or None for an image CLIP."""
    load_plugins()
    for resolve in _VIDEO_CLIPS:
        found = resolve(model)
        if found is not None:
            return found
    return None


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
        found = video_clip(model)
        if found is None:
            self.video_clip = None
            self.encoder = OpenClipEncoder(
                model, pretrained, resize_mode=resize_mode, quick_gelu=quick_gelu, dtype=dtype
            )
        else:
            key, load = found
            self.video_clip = cached(("video_clip", key), lambda: freeze(load()))

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
