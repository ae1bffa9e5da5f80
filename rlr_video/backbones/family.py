"""Model families by name: each family file registers everything the package needs from it.

A family is one file in ``rlr_video/backbones/families/`` (or a user's own module, imported
with ``--import``) whose adapter class is decorated with ``register_family``::

    @register_family(
        "wan",
        pipelines=("WanPipeline",),                        # model_index.json's _class_name
        denoisers=(("transformer", "WanTransformer3DModel"),),
        layout=LatentLayout(frame_axis=2, temporal_compression=4, frame_step=4),
        decoder="causal",                                   # or "frame_local", "whole"
        denoiser_kind="transformer",                        # or "unet"
        shard_blocks=("WanTransformerBlock",),              # FSDP units
        checkpoint_blocks=("WanTransformerBlock",),         # what diffusers' checkpointing wraps
        decode_steps=wan_decode_steps,                      # the causal decoder's loop
    )
    class WanBackbone(CausalDecoding, DiffusersBackbone): ...

Loading reads the pipeline and denoiser classes to detect a layout's family; the memory planner,
the checkpointing of activations and FSDP sharding read the rest through ``family_of(backbone)``
and the adapter's cost-model hooks (``latent_shape_for``, ``tokens_per_latent_frame``, and
``meta_conditioning`` for a denoiser that takes more than one text embedding): none of them
names a family. A family that leaves out something one of them needs is an error naming
what is missing (``MissingFamilyHook``), never a silent guess.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

FAMILIES_PACKAGE = "rlr_video.backbones.families"


class MissingFamilyHook(ValueError):
    """A family (or a backbone of one's own) lacks what a part of the package needs from it."""

    def __init__(self, family: str, hook: str, needed_by: str):
        self.family, self.hook = family, hook
        super().__init__(
            f"backbone family {family!r} declares no {hook}, which {needed_by} needs: "
            f"add it to the family's register_family(...) call (rlr_video.backbones.family)"
        )


@dataclass(frozen=True)
class LatentLayout:
    """How a video becomes the denoiser's latents.

    Attributes:
        frame_axis: the frame axis of a batch of latents: 2 for (B, C, F, h, w), 1 for
            (B, F, C, h, w) (CogVideoX).
        temporal_compression: video frames per latent frame (1: none).
        frame_step: valid video frame counts are ``1 + frame_step * k`` (a causal VAE keeps the
            first frame apart; CogVideoX needs an odd latent count, so 8); 1: any count.
    """

    frame_axis: int = 2
    temporal_compression: int = 1
    frame_step: int = 1

    @property
    def causal(self) -> bool:
        return self.temporal_compression > 1

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.temporal_compression + 1 if self.causal else frames

    def halve_frames(self, frames: int) -> int:
        """The valid frame count nearest half of ``frames`` (at least the smallest valid one)."""
        if self.frame_step == 1:
            return max(1, frames // 2)
        return 1 + self.frame_step * max(1, (frames - 1) // (2 * self.frame_step))


@dataclass(frozen=True)
class Family:
    """What ``register_family`` records about one family (see the module's docstring)."""

    name: str
    adapter: type
    pipelines: tuple[str, ...] = ()
    denoisers: tuple[tuple[str, str], ...] = ()
    aliases: tuple[str, ...] = ()
    # Among the families that share a denoiser class, this one's layouts (e.g. Wan 2.2 vs 2.1).
    accepts: Callable[[Any], bool] | None = None
    layout: LatentLayout = LatentLayout()
    decoder: Literal["frame_local", "causal", "whole"] | None = None
    denoiser_kind: Literal["unet", "transformer"] | None = None
    shard_blocks: tuple[str, ...] | None = None
    checkpoint_blocks: tuple[str, ...] = ()
    decode_steps: Callable[..., Any] | None = None
    # Trace the cost model's calls on the CPU with the real model (a tiny one whose code computes
    # on its inputs' device) instead of on the meta device.
    trace_on_cpu: bool = False

    def require(self, hook: str, needed_by: str) -> Any:
        """The declared value of ``hook``; ``MissingFamilyHook`` when it was left out."""
        value = getattr(self, hook)
        if value is None or value == ():
            raise MissingFamilyHook(self.name, hook, needed_by)
        return value


_FAMILIES: dict[str, Family] = {}
_DISCOVERED = False


def register_family(name: str, **declared: Any):
    """Class decorator: register the adapter class of the family ``name`` (see ``Family``)."""

    def decorate(cls: type) -> type:
        previous = _FAMILIES.get(name)
        if previous is not None and previous.adapter.__qualname__ != cls.__qualname__:
            raise ValueError(f"backbone family {name!r} is registered twice ({previous.adapter} and {cls})")
        cls.family = name
        _FAMILIES[name] = Family(name, cls, **declared)
        return cls

    return decorate


def _discover() -> None:
    """Import every module of ``rlr_video/backbones/families/`` once: family files register."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module(FAMILIES_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{FAMILIES_PACKAGE}.{info.name}")


def families() -> dict[str, Family]:
    """Every registered family by name (the shipped ones, and any a user's module registered)."""
    _discover()
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    """The family ``name`` (or one of its aliases); ValueError listing the known ones."""
    known = families()
    key = name.lower()
    for family in known.values():
        if key == family.name or key in family.aliases:
            return family
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown backbone family {name!r}{hint}; expected one of {', '.join(sorted(known))}")


def unwrap(backbone):
    """The innermost backbone of wrappers such as ``MultiScaleBackbone`` (a ``backbone`` attribute)."""
    seen = set()
    while "backbone" in getattr(backbone, "__dict__", {}) and id(backbone) not in seen:
        seen.add(id(backbone))
        backbone = backbone.__dict__["backbone"]
    return backbone


def denoisers_of(backbone) -> list:
    """The denoiser modules of a backbone (through wrappers): its ``denoisers`` when it lists
    them (a mixture of experts such as Wan 2.2 A14B has two), else ``[backbone.denoiser]``;
    [] for a backbone without one. FSDP, activation checkpointing and the memory planner act
    on each of them."""
    backbone = unwrap(backbone)
    listed = getattr(backbone, "denoisers", None)
    if listed is not None:
        return list(listed)
    model = getattr(backbone, "denoiser", None)
    return [model] if model is not None else []


def family_of(backbone, needed_by: str = "the memory planner") -> Family:
    """The registered family of a backbone (through wrappers such as ``MultiScaleBackbone``)."""
    backbone = unwrap(backbone)
    name = getattr(backbone, "family", None)
    if not name:
        raise MissingFamilyHook(type(backbone).__name__, "family", needed_by)
    return get_family(name)
