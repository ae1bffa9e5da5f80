"""The reward zoo: models that score videos, and a registry to build them by name."""

from rewards.base import Reward

__all__ = ["Reward"]
