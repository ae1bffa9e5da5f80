"""Training: the accelerate trainer, checkpoints and resume, metrics, prompts.

``Trainer`` / ``train`` import torch and accelerate; they load lazily so that config
validation (which uses ``rlr_video.train.prompts`` and ``.rewards`` names) stays light.
"""

from __future__ import annotations

__all__ = ["Trainer", "train"]


def __getattr__(name: str):
    if name in __all__:
        from rlr_video.train import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
