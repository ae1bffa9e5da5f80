"""Checkpoint units inside a denoiser call: which modules are frame-local, token-local or
temporal, and the wrappers that run them in checkpointed chunks (``recompute.MemoryOptions``
switches them on).

A UNet's frame-local modules (spatial resnets, spatial attention transformers, down/up samplers,
which see the video as B*F images) run ``frame_chunk`` images at a time, each chunk in its own
checkpoint; its temporal modules are checkpointed whole. A transformer has no frame-local
modules: its attention modules are checkpointed whole and its feed-forward layers (token-local)
run ``frame_chunk`` latent frames of tokens at a time. Which rules apply is the family's
``denoiser_kind``. Everything acts only while gradients are recorded; a frame-local module with
active dropout is checkpointed whole, as chunking would draw its masks in another order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rlr_video.backbones.family import denoisers_of, family_of

# Module classes by what they do to the frame axis (diffusers' building blocks, matched by class
# name so that nothing here imports diffusers); which rules apply is the family's
# ``denoiser_kind`` (rlr_video.backbones.family).
UNET_FRAME_LOCAL = ("ResnetBlock2D", "Transformer2DModel", "Downsample2D", "Upsample2D")
UNET_TEMPORAL = ("TemporalConvLayer", "TransformerTemporalModel", "AnimateDiffTransformer3D")
TRANSFORMER_TOKEN_LOCAL = ("FeedForward",)

_STATE = "_rlr_memory_units"


# --------------------------------------------------------------------------- chunked runs


def _pick(value: Any, dim: int, size: int, index: slice) -> Any:
    if isinstance(value, Tensor) and value.dim() > dim and value.shape[dim] == size:
        return value[(slice(None),) * dim + (index,)]
    return value


def _cat(outputs: list[Any], dim: int) -> Any:
    first = outputs[0]
    if isinstance(first, Tensor):
        return torch.cat(outputs, dim=dim)
    if isinstance(first, tuple | list):
        return type(first)(_cat([o[i] for o in outputs], dim) for i in range(len(first)))
    if dataclasses.is_dataclass(first):  # diffusers' BaseOutput
        return type(first)(
            **{f.name: _cat([getattr(o, f.name) for o in outputs], dim) for f in dataclasses.fields(first)}
        )
    return first  # a non-tensor output (None, a shape): the same for every chunk


def checkpoint_call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``torch.utils.checkpoint`` (non-reentrant) of ``fn(*args, **kwargs)`` with the keyword
    arguments passed positionally: checkpoint keeps keyword arguments by reference, so a
    tensor given by keyword would stay alive even inside an outer checkpoint (diffusers calls
    ``resnet(input_tensor=..., temb=...)``)."""
    if not kwargs:
        return checkpoint(fn, *args, use_reentrant=False)
    names, n = list(kwargs), len(args)

    def call(*flat: Any) -> Any:
        return fn(*flat[:n], **dict(zip(names, flat[n:])))

    return checkpoint(call, *args, *kwargs.values(), use_reentrant=False)


def run_chunked(fn: Callable, args: tuple, kwargs: dict, dim: int, size: int, chunk: int) -> Any:
    """``fn(*args, **kwargs)`` with every tensor argument whose axis ``dim`` has length ``size``
    split into ``chunk``-long pieces, each piece's call checkpointed, outputs concatenated.

    Exact for functions that act on each index of that axis independently (frame-local or
    token-local work)."""
    outputs = []
    for start in range(0, size, chunk):
        index = slice(start, min(start + chunk, size))
        a = tuple(_pick(v, dim, size, index) for v in args)
        kw = {k: _pick(v, dim, size, index) for k, v in kwargs.items()}
        outputs.append(checkpoint_call(fn, *a, **kw))
    return _cat(outputs, dim)


def has_active_dropout(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 and m.training for m in module.modules())


# --------------------------------------------------------------------------- denoiser units


@dataclass
class UnitState:
    """Switches shared by the wrappers installed on one denoiser."""

    active: bool = False
    frame_chunk: int | None = None  # rows of the B*F axis per chunk
    token_chunk: int | None = None  # tokens per chunk of token-local modules


def classify_units(model: nn.Module, kind: str | None) -> list[tuple[str, nn.Module, str]]:
    """The denoiser's checkpoint units as ``(name, module, kind)``, kind ``"frame"``
    (frame-local: chunked over B*F), ``"token"`` (token-local: chunked over the sequence) or
    ``"whole"``; outermost modules win, so units never nest. ``kind`` is the family's
    ``denoiser_kind``: ``unet`` rules, ``transformer`` rules, or None (no units)."""
    if kind == "unet":
        rules = {**dict.fromkeys(UNET_FRAME_LOCAL, "frame"), **dict.fromkeys(UNET_TEMPORAL, "whole")}
    elif kind == "transformer":
        rules = dict.fromkeys(TRANSFORMER_TOKEN_LOCAL, "token")
    else:
        return []
    units: list[tuple[str, nn.Module, str]] = []
    taken: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in taken):
            continue
        unit = rules.get(type(module).__name__)
        if unit is None and kind == "transformer" and _is_block_attention(name, module):
            unit = "whole"
        if unit is not None:
            units.append((name, module, unit))
            taken.append(name)
    return units


def denoiser_units(backbone) -> list[tuple[str, nn.Module, str]]:
    """``classify_units`` of a backbone's denoisers (each expert of a mixture of experts) by its
    family's ``denoiser_kind``."""
    kind = family_of(backbone, "activation checkpointing").denoiser_kind
    return [unit for model in denoisers_of(backbone) for unit in classify_units(model, kind)]


def builtin_checkpoint_units(backbone, twin: nn.Module | None = None) -> list[tuple[str, nn.Module, str]]:
    """The blocks of ``twin`` (default the backbone's denoiser) that the backbone's own gradient
    checkpointing recomputes whole (its family's ``checkpoint_blocks``) when it is on and units
    are off; [] when it is off or not declared (the cost model then counts every saved activation)."""
    blocks = family_of(backbone).checkpoint_blocks
    if not blocks or not getattr(backbone, "gradient_checkpointing", False):
        return []
    return [(name, m, "whole") for name, m in (twin or backbone.denoiser).named_modules() if type(m).__name__ in blocks]


def _is_block_attention(name: str, module: nn.Module) -> bool:
    """An attention module of a transformer block (``...blocks.N.attn1``)."""
    cls = type(module).__name__
    return cls.endswith("Attention") and ".attn" in f".{name.rsplit('.', 1)[-1]}" and "blocks." in name


def _unit_forward(module: nn.Module, forward: Callable, kind: str, state: UnitState) -> Callable:
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        if not (state.active and torch.is_grad_enabled()):
            return forward(*args, **kwargs)
        x = args[0] if args else next(iter(kwargs.values()))
        if kind == "frame" and state.frame_chunk and not has_active_dropout(module):
            rows = x.shape[0]
            if state.frame_chunk < rows:
                return run_chunked(forward, args, kwargs, 0, rows, state.frame_chunk)
        if kind == "token" and state.token_chunk and not has_active_dropout(module):
            tokens = x.shape[1]
            if state.token_chunk < tokens:
                return run_chunked(forward, args, kwargs, 1, tokens, state.token_chunk)
        return checkpoint_call(forward, *args, **kwargs)

    return wrapped


def install_units(backbone) -> UnitState:
    """Wrap the denoisers' units once (idempotent); returns the switches (off by default), one
    set for every denoiser of the backbone."""
    models = denoisers_of(backbone)
    state = getattr(models[0], _STATE, None)
    if state is None:
        state = UnitState()
        for _, module, kind in denoiser_units(backbone):
            module.forward = _unit_forward(module, module.forward, kind, state)
        for model in models:
            object.__setattr__(model, _STATE, state)  # not a submodule or buffer
    return state
