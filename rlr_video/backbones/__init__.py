"""Video models behind one protocol (``VideoBackbone``), plus the tiny example backbone."""

from rlr_video.backbones.protocol import Conditioning, VideoBackbone

__all__ = ["Conditioning", "VideoBackbone"]
