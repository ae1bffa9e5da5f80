"""``clip``: text–video alignment, CLIPScore averaged over frames.

Reference: jmhessel/clipscore ``clipscore.py`` (Hessel et al., 2021, ``get_clip_score``): OpenAI
CLIP ViT-B/32, each image preprocessed by Pillow (bicubic resize of the short side to 224,
torchvision ``CenterCrop(224)``, OpenAI mean and std), each caption prefixed with
``"A photo depicts "`` and tokenized with truncation, both embeddings L2-normalised, and
``2.5 · max(cos, 0)``. With an image CLIP the defaults are CLIPScore's (``scale=2.5``, that
prefix, ``clamp=True``, ``resize="pil"``, QuickGELU) and a video scores the mean of its frames'
CLIPScores. Training variants: ``clamp=False`` keeps the gradient of anticorrelated frames,
``resize="smooth"`` skips the 8-bit rounding, ``scale``/``prefix`` change the units and caption.

With a *video* CLIP, a model name a plugin resolves (``register_video_clip``; the testbed's
``model: shapes-clip``, or ``model: local-dir:/path`` to such a folder, which reads a video as a
contact sheet of its frames), the score is the cosine of the whole video, so it also sees motion
direction, which a mean over frames cannot. Its defaults are its own: ``scale=1``, no prefix, no
clamp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from rewards.encoders import OpenClipEncoder, follow_device
from rewards.frame_mean import FrameMeanReward
from rewards.frames import check_frames
from rewards.loading import cached, freeze
from rewards.preprocess import resize_style
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


CLIPSCORE_SCALE = 2.5
CLIPSCORE_PREFIX = "A photo depicts "


@register_reward("clip")
class ClipReward(FrameMeanReward):
    """Mean over frames of ``scale · max(cos(image(frame), text(prefix + prompt)), 0)``, or with a
    video CLIP ``scale · cos(video(frames), text(prompt))``."""

    name = "clip"
    needs_prompts = True

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        scale: float | None = None,
        prefix: str | None = None,
        clamp: bool | None = None,
        quick_gelu: bool | None = None,
        resize: str = "pil",
        resize_mode: str | None = None,
        dtype: str | None = None,
        chunk_size: int | None = 16,
        sample_frames: int | None = None,
        checkpoint: bool = False,
    ) -> None:
        super().__init__(chunk_size, sample_frames, checkpoint)
        found = video_clip(model)
        image_clip = found is None
        self.scale = float(scale if scale is not None else CLIPSCORE_SCALE if image_clip else 1.0)
        prefix = prefix if prefix is not None else CLIPSCORE_PREFIX if image_clip else ""
        # CLIPScore appends the space its prefix needs (CLIPCapDataset).
        self.prefix = prefix + " " if prefix and not prefix.endswith(" ") else prefix
        self.clamp = bool(clamp if clamp is not None else image_clip)
        if image_clip:
            self.video_clip = None
            rounding, pixel_clamp = resize_style(resize, self.name)
            self.encoder = OpenClipEncoder(
                model,
                pretrained,
                resize_mode=resize_mode,
                rounding=rounding,
                clamp=pixel_clamp,
                quick_gelu=quick_gelu,
                reference_quick_gelu=True,  # CLIPScore's model is OpenAI's ViT-B/32
                dtype=dtype,
            )
        else:
            key, load = found
            self.video_clip = cached(("video_clip", key), lambda: freeze(load()))

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        if self.video_clip is None:
            return super().__call__(frames, prompts)
        check_frames(frames, prompts, self.name)
        follow_device(self.video_clip, frames.device)
        captions = [self.prefix + p for p in prompts]
        cosine = self.video_clip(frames.float(), captions)
        return self.scale * (cosine.clamp(min=0) if self.clamp else cosine)

    def encode_images(self, images: Tensor) -> Tensor:
        return self.encoder.encode_images(images)

    def score(self, features: Tensor, prompts: Sequence[str]) -> Tensor:
        text = self.encoder.encode_text([self.prefix + p for p in prompts], features.device)  # (B, D)
        cosine = (features * text[:, None, :]).sum(dim=-1)
        return self.scale * (cosine.clamp(min=0) if self.clamp else cosine)
