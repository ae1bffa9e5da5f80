"""``load_backbone``: one entry point for every supported diffusers text-to-video family.

The family is read from the layout with the registered families' tables (``family.py``): the
denoiser's class (``unet/`` or ``transformer/``, per ``model_index.json`` or the folder's
``config.json``), else the pipeline's class. An explicit ``family=`` must agree with the layout
(its denoiser), so a wrong guess fails at load time with the path and both names instead of as a
shape error in the first forward pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlr_video.backbones.base import DiffusersBackbone
from rlr_video.backbones.family import Family, families, get_family
from rlr_video.backbones.layout import BackboneLoadError, Layout, packaged_defaults, resolve_source
from rlr_video.backbones.options import BackboneOptions


def family_class(family: str) -> type[DiffusersBackbone]:
    """The adapter class of a family name (or alias)."""
    return get_family(family).adapter


def _denoiser_families(folder: str, cls: str) -> list[Family]:
    return [f for f in families().values() if (folder, cls) in f.denoisers]


def detect_family(layout: Layout, motion_adapter: bool = False) -> str:
    """The family of a diffusers directory, from its denoiser's class or its pipeline's.

    Families that share a denoiser class (Wan 2.1 and 2.2) tell their layouts apart with their
    ``accepts`` rule."""
    found = {}
    for folder in ("unet", "transformer"):
        cls = layout.component_class(folder)
        if cls:
            found[folder] = cls
            candidates = _denoiser_families(folder, cls)
            chosen = [f for f in candidates if f.accepts is None or f.accepts(layout)]
            if len(chosen) == 1:
                return chosen[0].name
            if len(chosen) > 1:
                names = ", ".join(f.name for f in chosen)
                raise BackboneLoadError(f"{layout.root}: {folder}/{cls} fits the families {names}: pass family=")
    if found.get("unet") == "UNet2DConditionModel" and motion_adapter:
        return "animatediff"  # an SD-1.5 base combined with a MotionAdapter
    for family in families().values():
        if layout.pipeline_class in family.pipelines:
            return family.name
    top = layout.config(".") or {}
    if top.get("_class_name") == "MotionAdapter":
        raise BackboneLoadError(
            f"{layout.root} is a MotionAdapter, not a pipeline: load an SD-1.5 base with "
            f"motion_adapter='{layout.root}' instead"
        )
    if found.get("unet") == "UNet2DConditionModel":
        raise BackboneLoadError(
            f"{layout.root} is an image model ({layout.pipeline_class or 'UNet2DConditionModel'}); for "
            "AnimateDiff pass motion_adapter=<MotionAdapter directory or hub id> with it"
        )
    what = (
        f"pipeline {layout.pipeline_class!r} with denoiser(s) {found}"
        if layout.index or found
        else "no model_index.json and no unet/ or transformer/ folder"
    )
    raise BackboneLoadError(f"{layout.root} is no supported diffusers video layout ({what}); expected {supported()}")


def supported() -> str:
    """Every registered family's pipelines and denoisers, for error messages."""
    parts = []
    for family in families().values():
        if family.pipelines or family.denoisers:
            denoisers = ", ".join(f"{folder}/{cls}" for folder, cls in family.denoisers)
            parts.append(f"{family.name}: {', '.join(family.pipelines)} ({denoisers})")
    return "a diffusers pipeline directory of one of the families " + "; ".join(parts)


def load_backbone(path_or_hub_id: str | Path, family: str | None = None, **options: Any) -> DiffusersBackbone:
    """Load a diffusers text-to-video model as a ``VideoBackbone``.

    Args:
        path_or_hub_id: a diffusers pipeline directory, a hub id ("owner/name", from the
            cache or the hub), or a packaged name ("tiny-shapes"; by name or folder, its unset
            options default to how it was trained: 8 frames, no guidance).
        family: a registered family (``rlr_video.backbones.family.families()``: animatediff,
            modelscope (Zeroscope), cogvideox, wan, ... or one's own); detected from the layout when
            None, and checked against it (its denoiser class) when given.
        **options: ``BackboneOptions`` fields: dtype, device, num_steps, guidance_scale,
            negative_prompt, eta / noise_level, height, width, num_frames, lora_rank,
            lora_alpha, lora_targets, lora_path, gradient_checkpointing, train_mode, ...

    Raises:
        BackboneLoadError: the path, hub id or layout is not a supported model (the
            message names the path and what was expected).
    """
    root = resolve_source(path_or_hub_id)
    defaults = packaged_defaults(root)
    opts = BackboneOptions.from_kwargs(**{**options, **{k: v for k, v in defaults.items() if options.get(k) is None}})
    layout = Layout(root)
    if family is None:
        return family_class(detect_family(layout, motion_adapter=bool(opts.motion_adapter))).from_layout(layout, opts)
    wanted = get_family(family)  # validates the name
    denoisers = {(f, layout.component_class(f)) for f in ("unet", "transformer") if layout.component_class(f)}
    fits = bool(denoisers & set(wanted.denoisers)) and (wanted.accepts is None or wanted.accepts(layout))
    if not fits and not (opts.motion_adapter and wanted.name == "animatediff"):
        detected = detect_family(layout, motion_adapter=bool(opts.motion_adapter))
        raise BackboneLoadError(f"{root} holds a {detected} model (by its layout), but family={family!r} was requested")
    return wanted.adapter.from_layout(layout, opts)
