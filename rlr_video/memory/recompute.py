"""Frame-chunked gradient checkpointing of the backprop segment (FO step, HO sub-chain).

Three knobs, all exact (the gradients equal the plain computation's):

- ``checkpoint="call"``: each denoiser call replayed with gradients is recomputed in the
  backward pass (the estimator does this: ``RLR(checkpoint_calls=True)``), so the h calls of
  the half-order sub-chain keep only their input latents, not their activations.
- module *units* inside a denoiser call (``checkpoint="block"``, or whenever ``frame_chunk``
  is set; ``units.py``): frame-local work runs ``frame_chunk`` images (or latent frames of
  tokens) at a time, each chunk in its own checkpoint; temporal modules are checkpointed whole.
  Only unit inputs stay alive until the backward pass; a unit's insides exist one unit (one
  chunk) at a time.
- the decoder and the reward: a per-frame decoder (2D VAE, pixel space, the toy) decodes
  ``decode_chunk`` frames per checkpoint; a causal 3D VAE (Wan, CogVideoX) one video's decoder
  step (its latent-frame group, with the causal caches carried over) per checkpoint. Rewards of
  the zoo with ``chunk_size`` / ``checkpoint`` options encode ``reward_chunk`` images per
  checkpoint.

Everything here acts only while gradients are recorded: sampling without gradients runs the
plain forward. Dropout stays exact: ``torch.utils.checkpoint`` (non-reentrant) replays the
RNG state, and a frame-local module with active dropout is checkpointed whole rather than
chunked (chunking would draw its masks in a different order).

Use ``memory_options(backbone, ...)`` as a context manager, or ``apply_memory_options`` and
the returned handle's ``restore()``. A backbone of one's own may define
``memory_options(options) -> restore callable`` to take part; otherwise only the
estimator-level call checkpointing applies to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rlr_video.backbones.family import family_of, unwrap
from rlr_video.memory.units import UnitState, denoiser_units, install_units

CHECKPOINT_MODES = ("none", "block", "call")


@dataclass(frozen=True)
class MemoryOptions:
    """How the backprop segment trades recomputation for memory.

    Attributes:
        checkpoint: ``"none"``, ``"block"`` (module units inside each call) or ``"call"``
            (each replayed call recomputed whole; the units apply inside it when
            ``frame_chunk`` is set).
        frame_chunk: images (rows of the B*F axis, so frames across the batch, CFG rows
            included) per chunk of frame-local denoiser work; ``None``: no chunking.
        decode_chunk: frames per checkpointed decoder chunk (per-frame decoders);
            ``None``: ``frame_chunk``.
        reward_chunk: images per checkpointed reward-encoder chunk; ``None``: ``decode_chunk``.
    """

    checkpoint: str = "none"
    frame_chunk: int | None = None
    decode_chunk: int | None = None
    reward_chunk: int | None = None

    def __post_init__(self) -> None:
        if self.checkpoint not in CHECKPOINT_MODES:
            raise ValueError(f"checkpoint={self.checkpoint!r}: expected one of {CHECKPOINT_MODES}")
        for name in ("frame_chunk", "decode_chunk", "reward_chunk"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive integer or None")

    @property
    def units(self) -> bool:
        """Module-level checkpoints inside a denoiser call."""
        return self.checkpoint == "block" or self.frame_chunk is not None

    @property
    def calls(self) -> bool:
        """Call-level checkpoints (the estimator's part)."""
        return self.checkpoint == "call"

    @property
    def decoder_chunk(self) -> int | None:
        return self.decode_chunk if self.decode_chunk is not None else self.frame_chunk

    @property
    def reward_images(self) -> int | None:
        return self.reward_chunk if self.reward_chunk is not None else self.decoder_chunk

    @property
    def active(self) -> bool:
        return self.checkpoint != "none" or self.frame_chunk is not None or self.decoder_chunk is not None

    def replace(self, **changes: Any) -> MemoryOptions:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- backbones


def decoder_is_frame_local(backbone) -> bool:
    """Whether ``decode`` maps each frame on its own (2D VAEs, pixel space, the toy)."""
    return family_of(backbone).require("decoder", "decode checkpointing") == "frame_local"


def decoder_steps_checkpointed(backbone) -> bool:
    """Whether the decoder is a causal 3D VAE decoded one checkpointed step at a time when
    checkpointed (``rlr_video.backbones.causal_vae``: the family declares ``decode_steps``)."""
    return getattr(backbone, "decode_steps", None) is not None


def frame_axis(backbone) -> int:
    """The frame axis of the backbone's batched latents (the family's ``layout``)."""
    return family_of(backbone).layout.frame_axis


def tokens_per_latent_frame(backbone) -> int | None:
    """Tokens one latent frame becomes in a transformer (patchified h*w), if known."""
    shape = getattr(backbone, "latent_shape", None)
    hook = getattr(backbone, "tokens_per_latent_frame", None)
    if shape is None or hook is None:
        return None
    return hook(shape[-2], shape[-1])


def checkpointed_decode(decode: Callable[[Tensor], Tensor], axis: int, chunk: int | None, frame_local: bool):
    """``decode`` run in checkpointed frame chunks (frame-local decoders) or checkpointed
    whole, while gradients are recorded; frames come back (B, F, 3, H, W)."""

    @functools.wraps(decode)
    def wrapped(latents: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return decode(latents)
        if frame_local and chunk is not None and chunk < latents.shape[axis]:
            pieces = latents.split(chunk, dim=axis)
            return torch.cat([checkpoint(decode, p, use_reentrant=False) for p in pieces], dim=1)
        return checkpoint(decode, latents, use_reentrant=False)

    return wrapped


def chunkable_rewards(reward) -> Iterator[Any]:
    """Reward objects (inside training wrappers and mixtures) with ``chunk_size`` and
    ``checkpoint`` options, as the zoo's frame-mean and temporal rewards have."""
    seen: set[int] = set()
    stack = [reward]
    while stack:
        r = stack.pop()
        if r is None or id(r) in seen:
            continue
        seen.add(id(r))
        if hasattr(r, "chunk_size") and hasattr(r, "checkpoint") and not callable(r.checkpoint):
            yield r
        inner = getattr(r, "reward", None)
        if inner is not None and not callable(getattr(type(r), "reward", None)):
            stack.append(inner)
        terms = getattr(r, "terms", None)
        if isinstance(terms, dict):
            stack.extend(v[1] if isinstance(v, tuple) else v for v in terms.values())
        elif isinstance(terms, list | tuple):
            stack.extend(v[1] if isinstance(v, tuple) else v for v in terms)


class MemoryHandle:
    """What ``apply_memory_options`` changed; ``restore()`` undoes it."""

    def __init__(self, options: MemoryOptions):
        self.options = options
        self._undo: list[Callable[[], None]] = []
        self.applied: dict[str, Any] = {}

    def on_restore(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


def apply_memory_options(backbone, options: MemoryOptions, reward=None, estimator=None) -> MemoryHandle:
    """Make ``backbone`` (and ``reward``, ``estimator`` if given) honour ``options``.

    Denoiser units and the decoder are the backbone's part; call checkpointing is the
    estimator's (``checkpoint_calls``); reward chunking is the reward's. Returns a handle whose
    ``restore()`` puts everything back.
    """
    handle = MemoryHandle(options)
    inner = unwrap(backbone)
    own = getattr(inner, "memory_options", None)
    if callable(own):  # a backbone of the user's own that takes part itself
        undo = own(options)
        if callable(undo):
            handle.on_restore(undo)
        handle.applied["backbone"] = "its own memory_options"
    else:
        _apply_to_backbone(inner, options, handle)
    if estimator is not None and hasattr(estimator, "checkpoint_calls"):
        calls_before = estimator.checkpoint_calls
        estimator.checkpoint_calls = options.calls
        handle.on_restore(lambda: setattr(estimator, "checkpoint_calls", calls_before))
        handle.applied["calls"] = options.calls
    if reward is not None and options.reward_images is not None:
        for r in chunkable_rewards(reward):
            before = (r.chunk_size, r.checkpoint)
            r.chunk_size, r.checkpoint = options.reward_images, True
            handle.on_restore(
                lambda r=r, before=before: (setattr(r, "chunk_size", before[0]), setattr(r, "checkpoint", before[1]))
            )
            handle.applied.setdefault("reward", []).append(getattr(r, "name", type(r).__name__))
    return handle


def _apply_to_backbone(backbone, options: MemoryOptions, handle: MemoryHandle) -> None:
    model = getattr(backbone, "denoiser", None)
    if isinstance(model, nn.Module):
        state = install_units(backbone)
        before = dataclasses.replace(state)
        state.active = options.units
        state.frame_chunk = options.frame_chunk
        tokens = tokens_per_latent_frame(backbone)
        state.token_chunk = options.frame_chunk * tokens if options.frame_chunk and tokens else None
        handle.on_restore(lambda: _set_state(state, before))
        handle.applied["units"] = len(denoiser_units(backbone)) if options.units else 0
        if options.units:
            _pause_builtin_checkpointing(backbone, handle)
    if options.checkpoint == "none" and options.decoder_chunk is None:
        return
    if decoder_steps_checkpointed(backbone):
        # One decoder step per checkpoint: the same one recompute as checkpointing the decoder
        # whole, with the backward pass holding one step's activations instead of the clip's
        # (the caches carried between steps are far smaller: see causal_vae.decode_profile).
        before_chunk = backbone.__dict__.get("decode_checkpoint_chunk")
        backbone.decode_checkpoint_chunk = 1
        handle.on_restore(lambda: _reset_attr(backbone, "decode_checkpoint_chunk", before_chunk))
        handle.applied["decode"] = "per step"
    else:
        original = backbone.__dict__.get("decode")
        backbone.decode = checkpointed_decode(
            type(backbone).decode.__get__(backbone) if original is None else original,
            frame_axis(backbone),
            options.decoder_chunk,
            decoder_is_frame_local(backbone),
        )
        handle.on_restore(lambda: _reset_attr(backbone, "decode", original))
        handle.applied["decode"] = options.decoder_chunk if decoder_is_frame_local(backbone) else "whole"


def _set_state(state: UnitState, values: UnitState) -> None:
    state.active, state.frame_chunk, state.token_chunk = values.active, values.frame_chunk, values.token_chunk


def _reset_attr(obj, name: str, original) -> None:
    if original is None:
        obj.__dict__.pop(name, None)
    else:
        setattr(obj, name, original)


def _pause_builtin_checkpointing(backbone, handle: MemoryHandle) -> None:
    """Units replace the backbone's own checkpointing (diffusers' switch, UNet3D's block
    wrappers): nesting them would only recompute twice."""
    if getattr(backbone, "gradient_checkpointing", False):
        backbone.disable_gradient_checkpointing()
        handle.on_restore(backbone.enable_gradient_checkpointing)


@contextlib.contextmanager
def memory_options(
    backbone,
    checkpoint: str = "none",
    frame_chunk: int | None = None,
    decode_chunk: int | None = None,
    reward_chunk: int | None = None,
    reward=None,
    estimator=None,
):
    """Context manager: ``backbone`` (and ``reward`` / ``estimator``) honour the options inside."""
    options = MemoryOptions(checkpoint, frame_chunk, decode_chunk, reward_chunk)
    handle = apply_memory_options(backbone, options, reward=reward, estimator=estimator)
    try:
        yield handle
    finally:
        handle.restore()


def chunks(size: int, chunk: int | None) -> int:
    """How many chunks ``size`` rows make."""
    return 1 if not chunk or chunk >= size else math.ceil(size / chunk)
