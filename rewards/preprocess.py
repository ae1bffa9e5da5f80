"""Differentiable image preprocessing that matches each model's own (PIL-based) pipeline.

Reward models were trained on images resized by PIL, centre-cropped or padded, and normalised.
Here the same steps run on tensors so gradients reach the frames: antialiased resize
(``torchvision``'s tensor resize, i.e. ``F.interpolate(antialias=True)``), crop or pad, clamp to
[0, 1] (PIL images are 8-bit, so bicubic overshoot is clipped there too) and normalise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
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


@dataclass(frozen=True)
class ImagePreprocess:
    """(N, 3, H, W) in [0, 1] → (N, 3, *crop) normalised for a model.

    ``resize_mode``:
      - ``"shortest"``: shortest side to ``resize`` (aspect kept), then centre crop;
      - ``"longest"``: longest side to ``resize``, then centre pad with ``fill`` (HPSv2);
      - ``"squash"``: to ``resize`` (h, w), default ``crop``, aspect not kept (ViT/DINO processors),
        then centre crop.
    """

    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | tuple[int, int] | None = None
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.resize_mode not in ("shortest", "longest", "squash"):
            raise ValueError(f"unknown resize_mode {self.resize_mode!r}")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")

    def __call__(self, images: Tensor) -> Tensor:
        # torchvision is imported here, not at the top: it costs seconds and flicker-only runs
        # never need it.
        import torchvision.transforms.v2.functional as TF
        from torchvision.transforms import InterpolationMode

        images = images.float()  # resize kernels need float32 on the CPU
        height, width = images.shape[-2:]
        mode = InterpolationMode(self.interpolation)
        if self.resize_mode == "squash":
            size = list(_pair(self.resize if self.resize is not None else self.crop))
            needed = size != [height, width]
        else:
            target = self.resize if isinstance(self.resize, int) else min(self.crop)
            if self.resize_mode == "shortest":
                # torchvision's int size: short side → target, long side int(target * long / short).
                size, needed = [target], min(height, width) != target
            else:
                scale = target / max(height, width)
                size = [max(1, round(height * scale)), max(1, round(width * scale))]
                needed = size != [height, width]
        if needed:
            images = TF.resize(images, size, interpolation=mode, antialias=True)
        if mode != InterpolationMode.NEAREST:
            images = images.clamp(0.0, 1.0)
        images = self._crop_or_pad(images)
        return TF.normalize(images, list(self.mean), list(self.std))

    def _crop_or_pad(self, images: Tensor) -> Tensor:
        """Centre crop to ``crop``; sides that are too small are centre padded with ``fill``."""
        import torchvision.transforms.v2.functional as TF

        crop_h, crop_w = self.crop
        height, width = images.shape[-2:]
        pad_h, pad_w = max(0, crop_h - height), max(0, crop_w - width)
        if pad_h or pad_w:
            # left, top, right, bottom: the same split as open_clip's CenterCropOrPad / HPSv2.
            padding = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
            images = TF.pad(images, padding, fill=self.fill)
        if tuple(images.shape[-2:]) != (crop_h, crop_w):
            images = TF.center_crop(images, [crop_h, crop_w])
        return images

    @classmethod
    def from_open_clip(cls, model: Any, resize_mode: str | None = None) -> ImagePreprocess:
        """The eval transform open_clip builds for ``model`` (``model.visual.preprocess_cfg``)."""
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
            fill=float(cfg.get("fill_color", 0)),
        )

    @classmethod
    def from_hf(cls, processor: Any) -> ImagePreprocess:
        """The transform a Hugging Face image processor (CLIP, ViT, BiT/DINOv2) applies."""
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
        if "shortest_edge" in size:
            edge = int(size["shortest_edge"])
            return cls(
                crop=crop or (edge, edge),
                mean=mean,
                std=std,
                resize=edge,
                resize_mode="shortest",
                interpolation=interpolation,
            )
        squash = _pair(size)
        return cls(
            crop=crop or squash,
            mean=mean,
            std=std,
            resize=squash,
            resize_mode="squash",
            interpolation=interpolation,
        )


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
