"""Video models behind one protocol (``VideoBackbone``), plus the tiny example backbone.

``load_backbone(path_or_hub_id, family=None, **options)`` loads a diffusers text-to-video
model of a registered family (one file each in ``families/``: AnimateDiff, ModelScope/Zeroscope,
CogVideoX, Wan, ...; ``register_family`` adds one's own) as a ``VideoBackbone`` with LoRA; the
diffusers-backed names are imported on first use, so importing the protocol stays light.
"""

from typing import Any

from rlr_video.backbones.protocol import Conditioning, VideoBackbone

_LAZY = {
    "load_backbone": "rlr_video.backbones.loading",
    "detect_family": "rlr_video.backbones.loading",
    "families": "rlr_video.backbones.family",
    "register_family": "rlr_video.backbones.family",
    "LatentLayout": "rlr_video.backbones.family",
    "DiffusersBackbone": "rlr_video.backbones.base",
    "BackboneOptions": "rlr_video.backbones.options",
    "BackboneLoadError": "rlr_video.backbones.layout",
    "TextConditioning": "rlr_video.backbones.text",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Conditioning", "VideoBackbone", *_LAZY]
