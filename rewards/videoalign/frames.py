"""VideoAlign's frames, in torch: which frames it reads, the size it resizes them to, the pixels
and the patches Qwen2-VL's vision tower takes. Differentiable with respect to the frames.

References: KwaiVGI/VideoAlign ``vision_process.py`` (``smart_nframes``, ``smart_resize``,
``_read_video_decord``, ``fetch_video``; ``uniform`` sampling) and the image processor of its
pinned transformers 4.45.2 (``Qwen2VLImageProcessor._preprocess``):

- frames: ``nframes = total / video_fps · fps`` clamped to [4, total floored to even] and rounded
  to an even count (or a fixed ``nframes``, rounded to even), at
  ``torch.linspace(0, total − 1, nframes).round()``;
- size: ``smart_resize`` to multiples of 28 with at least 128·28·28 pixels and at most the
  checkpoint's ``max_frame_pixels``; torchvision's bicubic, antialiased resize of the uint8
  frames (float arithmetic, then clamped and rounded back to uint8: here a straight-through
  rounding, so the gradient is the unrounded resize's);
- pixels: ``× 1/255``, minus the processor's mean, over its std (OpenAI CLIP's);
- patches: groups of 2 frames × 14×14 pixels, ordered in 2×2 merge blocks, flattened as the
  processor does (``(t, h/28, w/28, 2, 2, C, 2, 14, 14)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rewards.preprocess import straight_through_round

IMAGE_FACTOR = 28
VIDEO_MIN_PIXELS = 128 * 28 * 28
MAX_RATIO = 200
FRAME_FACTOR = 2
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768


def _round_by(number: float, factor: int) -> int:
    return round(number / factor) * factor


def _ceil_by(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def _floor_by(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def smart_resize(
    height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = 200704
) -> tuple[int, int]:
    """VideoAlign's ``smart_resize``: sides that are multiples of ``factor``, the pixel count in
    [min_pixels, max_pixels], the aspect ratio kept as closely as that allows."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"videoalign: aspect ratio must be below {MAX_RATIO}, got {height}x{width}")
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar, w_bar = _floor_by(height / beta, factor), _floor_by(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = _ceil_by(height * beta, factor), _ceil_by(width * beta, factor)
    return h_bar, w_bar


def smart_nframes(total: int, video_fps: float | None, fps: float = 2.0, nframes: int | None = None) -> int:
    """VideoAlign's ``smart_nframes`` (its ``fps`` path with the default 4/768 frame bounds, or a
    fixed ``nframes``)."""
    if nframes is not None:
        count = _round_by(nframes, FRAME_FACTOR)
    else:
        if not video_fps or video_fps <= 0:
            raise ValueError(
                "videoalign samples frames by time: give video_fps= (the frame rate of the frames it scores, "
                "e.g. 8 for Zeroscope, 16 for Wan) or num_frames="
            )
        min_frames = _ceil_by(FPS_MIN_FRAMES, FRAME_FACTOR)
        max_frames = _floor_by(min(FPS_MAX_FRAMES, total), FRAME_FACTOR)
        count = min(max(total / video_fps * fps, min_frames), max_frames)
        count = _round_by(count, FRAME_FACTOR)
    count = min(count, total)
    if not FRAME_FACTOR <= count <= total:
        raise ValueError(f"videoalign: needs {FRAME_FACTOR} to {total} frames, got {count} from a {total}-frame video")
    if count % FRAME_FACTOR:
        raise ValueError(f"videoalign: the vision tower takes frames in pairs; {count} frames were asked for")
    return count


def frame_indices(total: int, video_fps: float | None, fps: float = 2.0, nframes: int | None = None) -> list[int]:
    """The frames VideoAlign reads (``uniform`` sampling): ``linspace(0, total − 1, n).round()``."""
    count = smart_nframes(total, video_fps, fps, nframes)
    return torch.linspace(0, total - 1, count).round().long().tolist()


def resize_frames(frames: Tensor, size: tuple[int, int], quantize: bool = True) -> Tensor:
    """(N, 3, H, W) in [0, 1] → (N, 3, h, w) on the 0–255 scale, as torchvision resizes uint8
    frames (bicubic, antialiased, clamped and rounded; the rounding straight-through)."""
    pixels = frames.float() * 255
    if tuple(size) == tuple(frames.shape[-2:]):
        return pixels
    pixels = F.interpolate(pixels, size=list(size), mode="bicubic", align_corners=False, antialias=True)
    pixels = pixels.clamp(0.0, 255.0)
    return straight_through_round(pixels, levels=1) if quantize else pixels


def patchify(pixels: Tensor, temporal: int = 2, patch: int = 14, merge: int = 2) -> tuple[Tensor, tuple[int, int, int]]:
    """Normalised (N, C, h, w) frames → (t·gh·gw, C·temporal·patch²) patches and (t, gh, gw)."""
    count, channels, height, width = pixels.shape
    t, gh, gw = count // temporal, height // patch, width // patch
    grid = pixels.reshape(t, temporal, channels, gh // merge, merge, patch, gw // merge, merge, patch)
    grid = grid.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return grid.reshape(t * gh * gw, channels * temporal * patch * patch), (t, gh, gw)


@dataclass(frozen=True)
class PixelConfig:
    """The base processor's numbers (its preprocessor_config.json)."""

    patch: int
    temporal: int
    merge: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min_pixels: int
    max_pixels: int

    @classmethod
    def of(cls, processor: Any) -> PixelConfig:
        image = processor.image_processor
        size = getattr(image, "size", None) or {}
        size = size if isinstance(size, dict) else dict(size.items()) if hasattr(size, "items") else {}
        return cls(
            patch=int(image.patch_size),
            temporal=int(image.temporal_patch_size),
            merge=int(image.merge_size),
            mean=tuple(float(v) for v in image.image_mean),
            std=tuple(float(v) for v in image.image_std),
            min_pixels=int(getattr(image, "min_pixels", None) or size.get("shortest_edge") or 56 * 56),
            max_pixels=int(getattr(image, "max_pixels", None) or size.get("longest_edge") or 28 * 28 * 1280),
        )


def frame_plan(
    count: int,
    height: int,
    width: int,
    video_fps: float | None,
    fps: float,
    num_frames: int | None,
    max_pixels: int,
    px: PixelConfig,
) -> dict[str, Any]:
    """The frames VideoAlign reads of ``count`` at ``video_fps`` (``fetch_video``), the size
    ``smart_resize`` gives them, and the vision tower's patch and merged token counts."""
    indices = frame_indices(count, video_fps, fps, num_frames)
    size = smart_resize(height, width, min_pixels=VIDEO_MIN_PIXELS, max_pixels=max_pixels)
    factor = px.patch * px.merge
    again = smart_resize(*size, factor=factor, min_pixels=px.min_pixels, max_pixels=px.max_pixels)
    if again != size:
        raise ValueError(
            f"videoalign: the base processor would resize {size} again to {again} (its min/max pixels "
            f"{px.min_pixels}/{px.max_pixels}); lower max_pixels"
        )
    patches = len(indices) // px.temporal * (size[0] // px.patch) * (size[1] // px.patch)
    tokens = patches // px.merge**2
    return {"indices": indices, "size": size, "vision_patches": patches, "vision_tokens": tokens}
