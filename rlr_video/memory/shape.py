"""The video shape every cost is a function of."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoShape:
    """A micro-batch of videos: ``batch`` videos of ``frames`` frames, ``height`` x ``width``
    pixels (what the decoder returns and the reward sees)."""

    batch: int
    frames: int
    height: int
    width: int

    def replace(self, **changes: int) -> VideoShape:
        return VideoShape(**{**self.__dict__, **changes})
