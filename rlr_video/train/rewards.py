"""Rewards as the trainer sees them: built from a config spec, recorded, per-prompt centred.

``build_reward(spec)`` accepts a name or a ``{name: weight}`` mapping. Names come from the
reward zoo (``rewards.build_reward``, issue 5) or from the small pixel rewards below, which
need no model weights and are what the toy backbone trains against on a CPU. Mixtures are
built here, term by term, so every term can be logged separately.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from rlr_video.train.prompts import final_prompt

# The zoo's documented names, used to validate configs while ``rewards`` has no registry yet.
ZOO_NAMES = ("aesthetic", "clip", "temporal", "flicker", "hpsv2", "pickscore")

COLORS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}


class PixelReward:
    """A reward computed directly from pixels; differentiable, no weights."""

    differentiable = True

    def __init__(self, name: str, fn: Callable[[Tensor, Sequence[str]], Tensor]):
        self.name, self._fn = name, fn

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        return self._fn(frames.float(), prompts)


def _brightness(frames: Tensor, prompts: Sequence[str]) -> Tensor:
    return frames.mean(dim=(1, 2, 3, 4))


def _redness(frames: Tensor, prompts: Sequence[str]) -> Tensor:
    r, g, b = frames.unbind(2)
    return (r - 0.5 * (g + b)).mean(dim=(1, 2, 3))


def _color_match(frames: Tensor, prompts: Sequence[str]) -> Tensor:
    """1 - mean |pixel - colour named in the prompt|; 0 for prompts that name no colour."""
    scores = []
    for video, prompt in zip(frames, prompts, strict=True):
        color = next((COLORS[w] for w in prompt.lower().split() if w in COLORS), None)
        if color is None:
            scores.append(video.sum() * 0.0)  # keeps the graph and the device
        else:
            target = torch.tensor(color, dtype=video.dtype, device=video.device)[None, :, None, None]
            scores.append(1.0 - (video - target).abs().mean())
    return torch.stack(scores)


PIXEL_REWARDS = {
    "brightness": _brightness,  # mean intensity: the simplest reward a toy model can climb
    "redness": _redness,  # red minus the mean of green and blue
    "color_match": _color_match,  # prompt-conditioned: closeness to the colour the prompt names
}


_registered = False


def _zoo():
    """The reward zoo package with the pixel rewards registered in it, or None.

    Registering makes ``rlr-video reward --import rlr_video.train.rewards --reward
    color_match`` score files exactly as training does. A zoo that fails to import (it is
    optional here) only disables zoo names.
    """
    global _registered
    try:
        zoo = importlib.import_module("rewards")
    except Exception:  # noqa: BLE001
        return None
    if not _registered and hasattr(zoo, "register_reward"):
        taken = set(zoo.available_rewards()) if hasattr(zoo, "available_rewards") else set()
        for name, fn in PIXEL_REWARDS.items():
            if name not in taken:
                zoo.register_reward(name, fn, differentiable=True, needs_prompts=name == "color_match")
        _registered = True
    return zoo


def register_pixel_rewards() -> bool:
    """Register the pixel rewards in the zoo (once); False when the zoo is unavailable."""
    return _zoo() is not None


def known_reward_names() -> set[str]:
    """Every reward name a config may use (no model is loaded)."""
    names = set(PIXEL_REWARDS)
    zoo = _zoo()
    listing = None
    for attr in ("available_rewards", "list_rewards", "names"):
        if zoo is not None and callable(getattr(zoo, attr, None)):
            listing = getattr(zoo, attr)()
            break
    if listing is None and zoo is not None and isinstance(getattr(zoo, "REGISTRY", None), dict):
        listing = zoo.REGISTRY
    return names | set(listing if listing is not None else ZOO_NAMES)


def build_one(name: str, options: dict[str, Any] | None = None):
    """One reward by name from the zoo (with ``options``), or a pixel reward without it."""
    zoo = _zoo()
    if zoo is not None and hasattr(zoo, "build_reward"):
        return zoo.build_reward(name, **(options or {}))
    if name in PIXEL_REWARDS and not options:
        return PixelReward(name, PIXEL_REWARDS[name])
    importlib.import_module("rewards")  # raises the zoo's own import error, naming its cause
    raise RuntimeError(f"reward '{name}' needs rewards.build_reward, which this installation lacks")


class WeightedSum:
    """sum_k w_k R_k over named terms; remembers each term's last values for logging."""

    def __init__(self, terms: dict[str, tuple[float, Callable]]):
        self.terms = terms
        self.name = "+".join(terms)
        self.differentiable = all(getattr(r, "differentiable", True) for _, r in terms.values())
        self.last_terms: dict[str, Tensor] = {}

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        total = 0.0
        for name, (weight, reward) in self.terms.items():
            value = reward(frames, prompts)
            self.last_terms[name] = value.detach()
            total = total + weight * value
        return total


def build_reward(spec: str | dict[str, Any]) -> WeightedSum:
    """The reward a config names: ``"clip"``, ``{"aesthetic": 1.0, "clip": 0.5}`` or, as in
    the zoo, ``{"label": {"reward": NAME, "weight": w, **options}}``."""
    entries = {spec: 1.0} if isinstance(spec, str) else dict(spec)
    terms = {}
    for label, value in entries.items():
        if isinstance(value, dict):
            options = dict(value)
            weight = float(options.pop("weight", 1.0))
            name = options.pop("reward", label)
        else:
            weight, name, options = float(value), label, {}
        reward = build_one(name, options)
        terms[label] = (weight, reward)
    return WeightedSum(terms)


class TrainingReward:
    """What the estimator calls: the configured reward on the final prompt, minus a baseline.

    It records the raw (uncentred) rewards and terms of the first call after ``reset()``:
    estimators score a rollout once before any pathwise re-evaluation of the same sample.
    """

    def __init__(self, reward: WeightedSum, baseline: Callable[[Sequence[str]], Tensor] | None = None):
        self.reward, self.baseline = reward, baseline
        self.name, self.differentiable = reward.name, reward.differentiable
        self.reset()

    def reset(self) -> None:
        self.raw: Tensor | None = None
        self.terms: dict[str, Tensor] = {}

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        value = self.reward(frames, [final_prompt(p) for p in prompts])
        if self.raw is None:
            self.raw = value.detach().float().cpu()
            self.terms = {k: v.float().cpu() for k, v in self.reward.last_terms.items()}
        if self.baseline is not None:
            value = value - self.baseline(prompts).to(value)
        return value
