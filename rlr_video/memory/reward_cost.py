"""Activation memory of a reward's backward pass, from its model or from its name alone.

A reward with a model is costed by formula, never traced (tracing runs it on meta frames, and a
reward that follows its frames' device would move its shared model there):

- a vision transformer per frame (``vit_image_bytes``), with as many tokens as the reward's own
  preprocessing gives the frames (``encoder.preprocess``: a crop's size, or VBench's DINO
  transform, which keeps the aspect ratio: 351 tokens for 576x320 frames, not 224x224's 197);
- a vision-language reward that reads the whole video (``input_sizes`` and ``model_dims``:
  videoalign) by ``vlm_video_bytes``, per video.

A pixel reward is traced. ``reward_stubs`` cost rewards known only by their config entry
(``rlr-video plan`` without weights): from a weight-free stand-in the reward declares
(``rewards.reward_sizes``, passed in as ``sizes``), else from their open_clip tower's config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlr_video.memory.attention import AttentionBackend, attention_saved_bytes
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
    if callable(getattr(reward, "input_sizes", None)) and callable(getattr(reward, "model_dims", None)):
        per_video, largest = vlm_video_bytes(reward, shape, backend)
        return int(per_video * shape.batch), per_video * shape.batch / images, largest, False  # whole videos
    chunkable = getattr(reward, "chunkable", hasattr(reward, "chunk_size") and hasattr(reward, "checkpoint"))
    vision = getattr(reward, "vision", None)  # a stub or stand-in (a reward known by name only)
    if vision is None:
        vision = next((vit_config(m) for m in reward_modules(reward) if vit_config(m) is not None), None)
    if vision is not None:
        tokens = image_tokens(reward, shape, vision)
        head_dim = vision["width"] // vision["heads"]
        per = vit_image_bytes(
            vision["width"],
            vision["layers"],
            vision["heads"],
            tokens,
            vision["itemsize"],
            materialized=backend.materializes(head_dim, torch.bfloat16),
        )
        return int(per * images), per, 4 * tokens * vision["width"] * vision["itemsize"], chunkable
    if getattr(reward, "pixels", True) and not reward_modules(reward):  # a pixel reward: trace it
        frames = torch.empty(shape.batch, shape.frames, 3, shape.height, shape.width, device=META, requires_grad=True)
        try:
            tr = trace(lambda: reward(frames, [""] * shape.batch), None, backend, False, "reward")
            return tr.saved, tr.saved / images, tr.largest_any, chunkable
        except Exception:  # noqa: BLE001 - a reward that needs real data: a frames-sized guess
            pass
    n = 2 * images * 3 * shape.height * shape.width * 4
    return n, n / images, n // 2, chunkable


def image_tokens(reward, shape: VideoShape, vision: dict[str, int]) -> int:
    """Tokens per frame: from the reward's preprocessing when it says (its crop, or the size its
    resize gives the frames) and the tower's patch size, else the tower's own count."""
    preprocess = getattr(getattr(reward, "encoder", None), "preprocess", None)
    patch = vision.get("patch")
    if preprocess is None or not patch:
        return vision["tokens"]
    crop = getattr(preprocess, "crop", None)
    height, width = crop if crop else preprocess.output_size(shape.height, shape.width)
    return (height // patch) * (width // patch) + 1


def vit_config(module: nn.Module) -> dict[str, int] | None:
    """Width, layers, heads, patch, tokens (at its native size) and dtype size of a vision
    transformer: an open_clip model's ``visual`` or a timm ``VisionTransformer`` under ``vit``
    (DINO); None for anything else."""
    visual = getattr(module, "visual", None)
    if visual is not None:
        return _open_clip_visual(visual)
    vit = getattr(module, "vit", None)
    blocks = getattr(vit, "blocks", None)
    if vit is None or not blocks:
        return None
    patch = int(getattr(module, "patch", None) or vit.patch_embed.patch_size[0])
    dtype = next(vit.parameters()).dtype
    return {
        "width": int(vit.embed_dim),
        "layers": len(blocks),
        "heads": int(blocks[0].attn.num_heads),
        "patch": patch,
        "tokens": int(vit.pos_embed.shape[1]),
        "itemsize": torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4,
    }


def _open_clip_visual(visual: nn.Module) -> dict[str, int]:
    """Width, layers, heads, patch, tokens and dtype size of an open_clip vision transformer."""
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
        "patch": int(patch[0]),
        "tokens": (size[0] // patch[0]) * (size[1] // patch[1]) + 1,
        "itemsize": torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4,
    }


PROMPT_TOKENS = 64  # a prompt's own tokens, on top of input_sizes' text_tokens (the empty prompt's)
FP32 = 4  # bytes of what Qwen2-VL computes in float32 whatever its dtype: rotary tables, RMSNorm, LayerNorm stats


def vlm_video_bytes(
    reward, shape: VideoShape, backend: AttentionBackend, prompt_tokens: int = PROMPT_TOKENS
) -> tuple[float, int]:
    """(saved bytes of one video, largest saved tensor) through a frozen vision-language reward
    whose frames need a gradient: VideoAlign's Qwen2-VL, from ``reward.input_sizes(F, H, W,
    video_fps)`` and ``reward.model_dims()``.

    Frozen linear layers keep only their weights, so what is saved is the non-linear parts'
    inputs, per the tensors autograd keeps (checked against a measurement in
    tests/test_memory_planner.py):

    - pixels: the N sampled frames resized to h x w in float32, and the vision tower's patches;
    - each of the vision tower's layers, over its P patches of width E (attention within each
      temporal slice of P / t patches): two LayerNorms' inputs, q/k in float32 for the rotary
      embedding and its cos/sin tables, attention (q, k, v, output and log-sum-exp, or the
      scores where the kernel materialises them), the QuickGELU's input and sigmoid (P x MLP);
    - the merger: its LayerNorm's input and its GELU's (P x E each);
    - each of the language model's layers, over L tokens (the video's merged tokens, the prompt
      template and the prompt): two RMSNorms' float32 inputs, attention with k and v at the
      key/value heads' width, the rotary tables, and the SiLU-gated MLP's three L x MLP tensors.
    """
    rate = getattr(reward, "video_fps", None)
    try:
        sizes = reward.input_sizes(shape.frames, shape.height, shape.width, rate)
    except ValueError:  # no frame rate known: VideoAlign would read every frame (its fps as the rate)
        sizes = reward.input_sizes(shape.frames, shape.height, shape.width, getattr(reward, "fps", 2.0))
    dims = reward.model_dims()
    item = dims["itemsize"]
    dtype = torch.bfloat16 if item == 2 else torch.float32
    frames, (height, width) = len(sizes["indices"]), sizes["size"]
    patches, slices = sizes["vision_patches"], max(1, frames // dims.get("vision_temporal", 2))
    e, heads_v = dims["vision_width"], dims["vision_heads"]
    hd_v = e // heads_v
    pixels = frames * 3 * height * width * (FP32 + item)
    per_slice = patches // slices
    attn_v = attention_saved_bytes(
        slices, heads_v, per_slice, per_slice, hd_v, hd_v, item, backend.materializes(hd_v, dtype)
    )
    vision_layer = (
        attn_v
        + 2 * patches * e * FP32  # q and k in float32 for the rotary embedding
        + 2 * patches * hd_v * FP32  # its cos and sin
        + 2 * patches * e * item
        + 2 * 2 * patches * FP32  # the two LayerNorms' inputs and statistics
        + 2 * patches * dims["vision_mlp"] * item  # QuickGELU: x and sigmoid(1.702 x)
    )
    merger = 2 * patches * e * item + 2 * patches * FP32
    tokens = sizes["text_tokens"] + prompt_tokens
    d, heads_t = dims["text_width"], dims["text_heads"]
    hd_t = d // heads_t
    kv = hd_t * dims["text_kv_heads"]
    materialized_t = backend.materializes(hd_t, dtype)
    attn_t = tokens * (2 * d + 2 * kv) * item + heads_t * tokens * FP32  # q, k, v, output, log-sum-exp
    if materialized_t:
        attn_t += heads_t * tokens * tokens * item
    text_layer = (
        attn_t
        + 2 * tokens * hd_t * item  # rotary cos and sin
        + 2 * tokens * d * FP32  # the two RMSNorms' float32 inputs
        + 3 * tokens * dims["text_mlp"] * item  # gate (SiLU's input), its output, up
    )
    text = dims["text_layers"] * text_layer + tokens * d * FP32  # and the final norm
    total = pixels + dims["vision_layers"] * vision_layer + merger + text
    largest = max(
        frames * 3 * height * width * FP32,
        patches * dims["vision_mlp"] * item,
        tokens * dims["text_mlp"] * item,
        heads_t * tokens * tokens * item if materialized_t else 0,
    )
    return float(total), int(largest)


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
    "temporal": "ViT-B-16",  # DINO ViT-B/16 has the same shape (at 224x224: its stand-in follows the frames)
}


@dataclass
class RewardStub:
    """A reward known only by its config entry (its weights are not loaded): enough to cost it."""

    name: str
    vision: dict[str, int] | None
    chunk_size: int | None = 16
    checkpoint: bool = False
    pixels: bool = True
    weights: int = 0  # bytes of the models the reward loads (0: not known, a model open_clip lacks)

    @property
    def chunkable(self) -> bool:
        return self.vision is not None

    def weight_bytes(self) -> int:
        """What the loaded reward's parameters would hold (the plan's fixed cost counts it)."""
        return self.weights


def reward_stubs(spec: str | dict[str, Any], itemsize: int = 4, sizes: Callable | None = None) -> list[Any]:
    """Stubs for a config's reward spec (a name, ``{name: weight}`` or ``{label: {reward: ...}}``):
    the weight-free stand-in ``sizes(name, options)`` gives (``rewards.reward_sizes``), else the
    open_clip tower of the reward's default model."""
    entries = {spec: {}} if isinstance(spec, str) else dict(spec)
    stubs = []
    for label, value in entries.items():
        options = dict(value) if isinstance(value, dict) else {}
        name = options.pop("reward", label)
        options.pop("weight", None)
        stand_in = sizes(name, options) if sizes is not None else None
        if stand_in is not None:
            if isinstance(getattr(stand_in, "vision", None), dict):
                stand_in.vision["itemsize"] = itemsize  # under autocast, the training precision
            stubs.append(stand_in)
            continue
        tower = options.get("model") or REWARD_TOWERS.get(name)
        if name == "temporal" and options.get("backbone") == "clip":
            tower = options.get("model") or "ViT-B-32"
        vision = _open_clip_tower(tower, itemsize) if tower else None
        weights = _open_clip_weight_bytes(tower, options.get("dtype"), name == "aesthetic") if tower else 0
        stubs.append(RewardStub(name, vision, pixels=vision is None, weights=weights))
    return stubs


class RewardStubs:
    """A config's reward spec as stubs, one term each: the reward ``rlr-video plan`` costs
    without loading any weights (the cost model sums its ``terms``). ``sizes``: see
    :func:`reward_stubs`."""

    def __init__(self, spec: str | dict[str, Any], itemsize: int = 4, sizes: Callable | None = None):
        self.terms = [(1.0, stub) for stub in reward_stubs(spec, itemsize, sizes)]


def _open_clip_weight_bytes(name: str, dtype: str | None, aesthetic_head: bool) -> int:
    """Bytes of the open_clip model ``name`` as a reward loads it: both towers (``create_model``
    builds the whole CLIP), in ``dtype`` (the reward's option; float32 when None), counted on the
    meta device. ``aesthetic_head``: plus the improved aesthetic predictor's float32 MLP
    (``rewards.aesthetic.AestheticMLP``: embedding -> 1024 -> 128 -> 64 -> 16 -> 1). 0 for a
    model open_clip does not know (a transformers id)."""
    try:
        import open_clip

        embed = (open_clip.get_model_config(name) or {}).get("embed_dim")
        if embed is None:
            return 0
        root = logging.getLogger()  # open_clip warns on the root logger that no weights were loaded
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with torch.device("meta"):  # no initialisation: 0.3 s for ViT-H-14, not 7 s
                model = open_clip.create_model(name, pretrained=None, device="meta")
        finally:
            root.setLevel(level)
    except Exception:  # noqa: BLE001 - open_clip missing
        return 0
    itemsize = 2 if dtype in ("fp16", "bf16") else 4
    total = sum(p.numel() for p in model.parameters()) * itemsize
    if aesthetic_head:
        dims = (embed, 1024, 128, 64, 16, 1)
        total += sum((i + 1) * o for i, o in zip(dims, dims[1:])) * 4
    return total


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
