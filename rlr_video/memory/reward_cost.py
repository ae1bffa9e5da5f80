"""Activation memory of a reward's backward pass, from its model or from its name alone.

A reward with a vision transformer is costed by formula (``vit_image_bytes``), never traced
(tracing runs it on meta frames, and a reward that follows its frames' device would move its
shared model there); a pixel reward is traced; ``reward_stubs`` cost rewards known only by
their config entry, from their open_clip tower's config (``rlr-video plan`` without weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlr_video.memory.attention import AttentionBackend
from rlr_video.memory.meta import META
from rlr_video.memory.shape import VideoShape
from rlr_video.memory.trace import trace


def leaf_rewards(reward) -> list[Any]:
    """The rewards inside training wrappers and weighted mixtures."""
    if reward is None:
        return []
    inner = reward.__dict__.get("reward") if hasattr(reward, "__dict__") else None
    if inner is not None:
        return leaf_rewards(inner)
    terms = getattr(reward, "terms", None)
    if isinstance(terms, dict):
        return [r for v in terms.values() for r in leaf_rewards(v[1] if isinstance(v, tuple) else v)]
    if isinstance(terms, list | tuple):
        return [r for v in terms for r in leaf_rewards(v[1] if isinstance(v, tuple) else v)]
    return [reward]


def reward_modules(reward) -> list[nn.Module]:
    """The models a reward holds: itself if it is one, its attributes that are, and its
    encoder's model. Any reward with a model is costed, never traced: tracing runs it on meta
    frames, and a reward that follows its frames' device would move its (shared) model there."""
    if isinstance(reward, nn.Module):
        return [reward]
    encoder = getattr(reward, "encoder", None)
    found = [getattr(encoder, "model", None), *vars(reward).values()] if hasattr(reward, "__dict__") else []
    return list({id(m): m for m in found if isinstance(m, nn.Module)}.values())  # each once, in order


def reward_leaf_cost(reward, shape: VideoShape, backend: AttentionBackend) -> tuple[int, float, int, bool]:
    """(saved bytes on all frames, per-image bytes, largest tensor, chunkable) of one reward."""
    images = shape.batch * shape.frames
    chunkable = getattr(reward, "chunkable", hasattr(reward, "chunk_size") and hasattr(reward, "checkpoint"))
    vision = getattr(reward, "vision", None)  # a RewardStub (a reward known by name only)
    if vision is None:
        visual = next((getattr(m, "visual", None) for m in reward_modules(reward)), None)
        vision = vit_config(visual) if visual is not None else None
    if vision is not None:
        per = vit_image_bytes(
            **vision, materialized=backend.materializes(vision["width"] // vision["heads"], torch.bfloat16)
        )
        tokens, width, item = vision["tokens"], vision["width"], vision["itemsize"]
        return int(per * images), per, 4 * tokens * width * item, chunkable
    if getattr(reward, "pixels", True) and not reward_modules(reward):  # a pixel reward: trace it
        frames = torch.empty(shape.batch, shape.frames, 3, shape.height, shape.width, device=META, requires_grad=True)
        try:
            tr = trace(lambda: reward(frames, [""] * shape.batch), None, backend, False, "reward")
            return tr.saved, tr.saved / images, tr.largest_any, chunkable
        except Exception:  # noqa: BLE001 - a reward that needs real data: a frames-sized guess
            pass
    n = 2 * images * 3 * shape.height * shape.width * 4
    return n, n / images, n // 2, chunkable


def vit_config(visual: nn.Module) -> dict[str, int]:
    """Width, layers, heads, tokens and dtype size of an open_clip vision transformer."""
    transformer = getattr(visual, "transformer", None)
    width = int(getattr(transformer, "width", 768))
    layers = int(getattr(transformer, "layers", 12))
    block = getattr(transformer, "resblocks", [None])[0]
    heads = int(getattr(getattr(block, "attn", None), "num_heads", max(1, width // 64)))
    size = getattr(visual, "image_size", (224, 224))
    patch = getattr(visual, "patch_size", (16, 16))
    size = size if isinstance(size, tuple | list) else (size, size)
    patch = patch if isinstance(patch, tuple | list) else (patch, patch)
    dtype = next(visual.parameters()).dtype
    return {
        "width": width,
        "layers": layers,
        "heads": heads,
        "tokens": (size[0] // patch[0]) * (size[1] // patch[1]) + 1,
        "itemsize": torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4,
    }


def vit_image_bytes(
    width: int, layers: int, heads: int, tokens: int, itemsize: int, materialized: bool, coefficient: float = 12.0
) -> float:
    """Saved bytes per image of a frozen vision transformer whose input needs a gradient: per
    layer about ``coefficient`` x tokens x width (two layer norms' inputs, q, k, v and the
    attention output, the MLP's 4x-wide GELU input, the head split's copies; frozen linear
    layers keep nothing), plus heads x tokens^2 when the attention scores are materialised."""
    per_layer = coefficient * tokens * width * itemsize
    if materialized:
        per_layer += heads * tokens * tokens * itemsize
    return float(layers * per_layer)


# Rewards known by name: the vision tower of their default model (open_clip configs).
REWARD_TOWERS = {
    "aesthetic": "ViT-L-14",
    "clip": "ViT-B-32",
    "hpsv2": "ViT-H-14",
    "pickscore": "ViT-H-14",
    "temporal": "ViT-B-16",  # DINO ViT-B/16 has the same shape
}


@dataclass
class RewardStub:
    """A reward known only by its config entry (its weights are not loaded): enough to cost it."""

    name: str
    vision: dict[str, int] | None
    chunk_size: int | None = 16
    checkpoint: bool = False
    pixels: bool = True

    @property
    def chunkable(self) -> bool:
        return self.vision is not None


def reward_stubs(spec: str | dict[str, Any], itemsize: int = 4) -> list[RewardStub]:
    """Stubs for a config's reward spec (a name, ``{name: weight}`` or ``{label: {reward: ...}}``)."""
    entries = {spec: {}} if isinstance(spec, str) else dict(spec)
    stubs = []
    for label, value in entries.items():
        options = dict(value) if isinstance(value, dict) else {}
        name = options.get("reward", label)
        tower = options.get("model") or REWARD_TOWERS.get(name)
        if name == "temporal" and options.get("backbone") == "clip":
            tower = options.get("model") or "ViT-B-32"
        vision = _open_clip_tower(tower, itemsize) if tower else None
        stubs.append(RewardStub(name, vision, pixels=vision is None))
    return stubs


class RewardStubs:
    """A config's reward spec as stubs, one term each: the reward ``rlr-video plan`` costs
    without loading any weights (the cost model sums its ``terms``)."""

    def __init__(self, spec: str | dict[str, Any], itemsize: int = 4):
        self.terms = [(1.0, stub) for stub in reward_stubs(spec, itemsize)]


def _open_clip_tower(name: str, itemsize: int) -> dict[str, int] | None:
    try:
        import open_clip

        cfg = (open_clip.get_model_config(name) or {}).get("vision_cfg")
    except Exception:  # noqa: BLE001 - open_clip missing, or a transformers model id
        cfg = None
    if not cfg or not isinstance(cfg.get("layers"), int):
        return {"width": 768, "layers": 12, "heads": 12, "tokens": 197, "itemsize": itemsize}
    width, patch, size = cfg["width"], cfg["patch_size"], cfg.get("image_size", 224)
    heads = width // cfg.get("head_width", 64)
    return {
        "width": width,
        "layers": cfg["layers"],
        "heads": heads,
        "tokens": (size // patch) ** 2 + 1,
        "itemsize": itemsize,
    }
