"""Differentiable image preprocessing that reproduces each reward's reference pipeline on tensors.

The references resize their frames in one of three ways, and ``rounding`` / ``clamp`` say which:

- **PIL on 8-bit images** (CLIPScore and the aesthetic predictor through OpenAI ``clip``'s
  ``Resize``; PickScore through the Hugging Face ``CLIPProcessor``): Pillow resamples in two 1-D
  passes, width first, and stores each pass as 8-bit. ``rounding="pil"`` does the same with
  torchvision's antialiased kernels (Pillow's filters): after each pass the pixels are clamped to
  [0, 1] and rounded to multiples of 1/255. Measured against Pillow 12 on 8-bit frames with hard
  edges, 0.03–0.2 % of the bicubic pixels differ, each by 1/255 (Pillow's fixed-point weights).
- **torchvision on uint8 tensors** (VideoAlign's frames): one pass, clamped and rounded once:
  ``rounding="uint8"``.
- **torchvision on float tensors** (HPSv2's ``ToTensor`` then ``Resize``; VBench's frames):
  one pass, no clamp, no rounding: ``rounding="none", clamp=False``.

Rounding is a straight-through step: the forward pass rounds, the backward pass is the
unrounded resize's, so gradients reach the frames unchanged. ``rounding="none", clamp=True`` is
the smooth variant rewards offer for training (``resize="smooth"``).

The centre crop lands where the reference puts it: torchvision's ``CenterCrop`` rounds
(``int(round((H - h) / 2))``, Python's half-to-even), the Hugging Face image processors floor
(``(H - h) // 2``); they differ when the margin is odd (576×320 → 403×224 has margin 179).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# PIL resample codes used by Hugging Face image processors.
_PIL_RESAMPLE = {
    0: "nearest",
    1: "bilinear",
    2: "bilinear",
    3: "bicubic",
    4: "bilinear",
    5: "bicubic",
}
_INTERPOLATION = ("nearest", "bilinear", "bicubic")
ROUNDING = ("pil", "uint8", "none")
CROP_OFFSETS = ("round", "floor")

# The ``resize`` option of rewards whose reference resizes 8-bit images: (rounding, clamp).
RESIZE_STYLES = {
    "pil": ("pil", True),  # Pillow on 8-bit images: the reference (default)
    "uint8": ("uint8", True),  # one pass rounded once: torchvision on uint8 tensors
    "smooth": ("none", True),  # no rounding: a smooth forward pass for training
}


def resize_style(style: str, reward: str) -> tuple[str, bool]:
    """(rounding, clamp) of a reward's ``resize`` option, with an error naming the reward."""
    if style not in RESIZE_STYLES:
        raise ValueError(f"{reward}: resize must be one of {sorted(RESIZE_STYLES)}, got {style!r}")
    return RESIZE_STYLES[style]


def straight_through_round(images: Tensor, levels: int = 255) -> Tensor:
    """``images`` rounded to multiples of ``1 / levels`` in the forward pass, unchanged in the
    backward pass (the straight-through estimator)."""
    return images + ((images * levels).round() / levels - images).detach()


def to_8bit(images: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8 bits, as storing a float image in a uint8 buffer does
    (straight-through: the clamp's gradient, not the rounding's)."""
    return straight_through_round(images.clamp(0.0, 1.0))


@dataclass(frozen=True)
class ImagePreprocess:
    """(N, 3, H, W) in [0, 1] → (N, 3, h, w) normalised for a model.

    ``resize_mode``:
      - ``"shortest"``: shortest side to ``resize`` (aspect kept; the long side is
        ``int(resize * long / short)``, as torchvision computes it), then centre crop;
      - ``"longest"``: longest side to ``resize`` (the short side ``round(short * resize / long)``,
        HPSv2's ``ResizeMaxSize``), then centre pad with ``fill``;
      - ``"squash"``: to ``resize`` (h, w), aspect not kept, then centre crop.

    ``crop=None`` keeps the resized image whole (VBench's DINO transform). ``antialias=False``
    resamples without the antialiasing filter (VBench). See the module docstring for ``rounding``,
    ``clamp`` and ``crop_offset``.
    """

    crop: tuple[int, int] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | tuple[int, int] | None = None
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    antialias: bool = True
    rounding: str = "none"
    clamp: bool = True
    crop_offset: str = "round"
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.resize_mode not in ("shortest", "longest", "squash"):
            raise ValueError(f"unknown resize_mode {self.resize_mode!r}")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if self.rounding not in ROUNDING:
            raise ValueError(f"rounding must be one of {ROUNDING}, got {self.rounding!r}")
        if self.crop_offset not in CROP_OFFSETS:
            raise ValueError(f"crop_offset must be one of {CROP_OFFSETS}, got {self.crop_offset!r}")
        if self.crop is None and self.resize is None:
            raise ValueError("an ImagePreprocess needs a resize target or a crop size")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the resize step produces for a (height, width) input."""
        if self.resize_mode == "squash":
            return _pair(self.resize if self.resize is not None else self.crop)
        target = self.resize if isinstance(self.resize, int) else min(self.crop)  # type: ignore[arg-type]
        if self.resize_mode == "shortest":
            if height <= width:
                return target, int(target * width / height)
            return int(target * height / width), target
        scale = target / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def __call__(self, images: Tensor) -> Tensor:
        images = self.resized(images.float())  # resize kernels need float32 on the CPU
        images = self._crop_or_pad(images)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        return (images - mean) / std

    def resized(self, images: Tensor) -> Tensor:
        """The resize step alone, with the reference's clamping and rounding."""
        height, width = images.shape[-2:]
        size = self.output_size(height, width)
        if size == (height, width):
            return images
        if self.rounding == "pil":
            # Pillow: a horizontal pass, stored as 8-bit, then a vertical pass, stored as 8-bit.
            if size[1] != width:
                images = to_8bit(self._interpolate(images, (height, size[1])))
            if size[0] != height:
                images = to_8bit(self._interpolate(images, size))
            return images
        images = self._interpolate(images, size)
        if self.rounding == "uint8":
            return to_8bit(images)
        return images.clamp(0.0, 1.0) if self.clamp and self.interpolation != "nearest" else images

    def _interpolate(self, images: Tensor, size: tuple[int, int]) -> Tensor:
        smooth = self.interpolation != "nearest"
        return F.interpolate(
            images,
            size=list(size),
            mode=self.interpolation,
            align_corners=False if smooth else None,
            antialias=self.antialias and smooth,
        )

    def _crop_or_pad(self, images: Tensor) -> Tensor:
        """Centre crop to ``crop``; sides that are too small are centre padded with ``fill``."""
        if self.crop is None:
            return images
        crop_h, crop_w = self.crop
        height, width = images.shape[-2:]
        pad_h, pad_w = max(0, crop_h - height), max(0, crop_w - width)
        if pad_h or pad_w:
            # left, right, top, bottom: the split of open_clip's CenterCropOrPad and HPSv2's ResizeMaxSize.
            padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
            images = F.pad(images, padding, value=self.fill)
            height, width = images.shape[-2:]
        top = _offset(height - crop_h, self.crop_offset)
        left = _offset(width - crop_w, self.crop_offset)
        return images[..., top : top + crop_h, left : left + crop_w]

    @classmethod
    def from_open_clip(
        cls, model: Any, resize_mode: str | None = None, rounding: str = "none", clamp: bool = True
    ) -> ImagePreprocess:
        """The eval transform open_clip builds for ``model`` (``model.visual.preprocess_cfg``):
        torchvision ``Resize`` and ``CenterCrop`` (the crop rounds)."""
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        crop = _pair(size)
        mode = resize_mode or cfg.get("resize_mode", "shortest")
        return cls(
            crop=crop,
            mean=tuple(cfg.get("mean", model.visual.image_mean)),
            std=tuple(cfg.get("std", model.visual.image_std)),
            resize=max(crop) if mode == "longest" else min(crop),
            resize_mode=mode,
            interpolation=cfg.get("interpolation", "bicubic"),
            rounding=rounding,
            clamp=clamp,
            fill=float(cfg.get("fill_color", 0)),
        )

    @classmethod
    def from_hf(cls, processor: Any, rounding: str = "none", clamp: bool = True) -> ImagePreprocess:
        """The transform a Hugging Face image processor (CLIP, ViT, BiT/DINOv2) applies; its
        centre crop floors the offset."""
        cfg: Mapping[str, Any] = processor.to_dict() if hasattr(processor, "to_dict") else processor
        size = cfg.get("size") or {}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        crop_cfg = cfg.get("crop_size") if cfg.get("do_center_crop") else None
        crop = _pair(crop_cfg) if crop_cfg else None
        resample = cfg.get("resample", 2)
        interpolation = _PIL_RESAMPLE.get(int(getattr(resample, "value", resample)), "bilinear")
        mean = _triple(cfg.get("image_mean", 0.5)) if cfg.get("do_normalize", True) else (0.0,) * 3
        std = _triple(cfg.get("image_std", 0.5)) if cfg.get("do_normalize", True) else (1.0,) * 3
        common = {"interpolation": interpolation, "rounding": rounding, "clamp": clamp, "crop_offset": "floor"}
        if "shortest_edge" in size:
            edge = int(size["shortest_edge"])
            return cls(crop=crop, mean=mean, std=std, resize=edge, resize_mode="shortest", **common)
        squash = _pair(size)
        return cls(crop=crop or squash, mean=mean, std=std, resize=squash, resize_mode="squash", **common)


def _offset(margin: int, rule: str) -> int:
    """Where a centre crop starts: torchvision rounds half to even, Hugging Face floors."""
    return int(round(margin / 2.0)) if rule == "round" else margin // 2


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, Mapping):
        return int(size["height"]), int(size["width"])
    if isinstance(size, Sequence):
        return (int(size[0]), int(size[-1]))
    return int(size), int(size)


def _triple(value: Any) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    return tuple(float(v) for v in value)


def to_device_dtype(images: Tensor, module: torch.nn.Module) -> Tensor:
    """Cast preprocessed images to the device and dtype of ``module``'s first parameter."""
    param = next(module.parameters())
    return images.to(device=param.device, dtype=param.dtype)
