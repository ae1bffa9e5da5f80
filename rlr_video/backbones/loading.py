"""``load_backbone``: one entry point for every supported diffusers text-to-video family.

The family is read from the layout: the denoiser's class (``unet/`` or ``transformer/``,
per ``model_index.json`` or the folder's ``config.json``), else the pipeline's class. An
explicit ``family=`` must agree with the layout, so a wrong guess fails at load time with
the path and both names instead of as a shape error in the first forward pass.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from rlr_video.backbones.base import DiffusersBackbone
from rlr_video.backbones.layout import BackboneLoadError, Layout, packaged_defaults, resolve_source
from rlr_video.backbones.options import BackboneOptions

# family -> (module, class) of its adapter
FAMILIES: dict[str, tuple[str, str]] = {
    "animatediff": ("rlr_video.backbones.animatediff", "AnimateDiffBackbone"),
    "modelscope": ("rlr_video.backbones.modelscope", "ModelScopeBackbone"),
    "cogvideox": ("rlr_video.backbones.cogvideox", "CogVideoXBackbone"),
    "wan": ("rlr_video.backbones.wan", "WanBackbone"),
}
ALIASES = {
    "zeroscope": "modelscope",
    "unet3d": "modelscope",
    "text-to-video-ms": "modelscope",
    "cogvideo": "cogvideox",
    "wan2.1": "wan",
    "wan21": "wan",
    "animate-diff": "animatediff",
}
# (component folder, denoiser class) -> family
DENOISERS = {
    ("unet", "UNetMotionModel"): "animatediff",
    ("unet", "UNet3DConditionModel"): "modelscope",
    ("transformer", "CogVideoXTransformer3DModel"): "cogvideox",
    ("transformer", "WanTransformer3DModel"): "wan",
}
PIPELINES = {
    "AnimateDiffPipeline": "animatediff",
    "TextToVideoSDPipeline": "modelscope",
    "CogVideoXPipeline": "cogvideox",
    "WanPipeline": "wan",
}


def family_class(family: str) -> type[DiffusersBackbone]:
    """The adapter class of a family name (or alias)."""
    name = ALIASES.get(family.lower(), family.lower())
    if name not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}; expected one of {sorted(FAMILIES)}")
    module, cls = FAMILIES[name]
    return getattr(importlib.import_module(module), cls)


def detect_family(layout: Layout, motion_adapter: bool = False) -> str:
    """The family of a diffusers directory, from its denoiser's class or its pipeline's."""
    found = {}
    for folder in ("unet", "transformer"):
        cls = layout.component_class(folder)
        if cls:
            found[folder] = cls
            if (folder, cls) in DENOISERS:
                return DENOISERS[(folder, cls)]
    if found.get("unet") == "UNet2DConditionModel" and motion_adapter:
        return "animatediff"  # an SD-1.5 base combined with a MotionAdapter
    if layout.pipeline_class in PIPELINES:
        return PIPELINES[layout.pipeline_class]
    top = layout.config(".") or {}
    expected = "a diffusers pipeline directory (model_index.json) whose denoiser is one of " + ", ".join(
        f"{f}/{c}" for f, c in DENOISERS
    )
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
    raise BackboneLoadError(f"{layout.root} is no supported diffusers video layout ({what}); expected {expected}")


def load_backbone(path_or_hub_id: str | Path, family: str | None = None, **options: Any) -> DiffusersBackbone:
    """Load a diffusers text-to-video model as a ``VideoBackbone``.

    Args:
        path_or_hub_id: a diffusers pipeline directory, a hub id ("owner/name", from the
            cache or the hub), or a packaged name ("tiny-shapes"; by name or folder, its unset
            options default to how it was trained: 8 frames, no guidance).
        family: "animatediff", "modelscope" (Zeroscope), "cogvideox" or "wan"; detected
            from the layout when None, and checked against it when given.
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
    detected = detect_family(layout, motion_adapter=bool(opts.motion_adapter))
    if family is not None:
        wanted = ALIASES.get(family.lower(), family.lower())
        family_class(wanted)  # validates the name
        if wanted != detected:
            raise BackboneLoadError(
                f"{root} holds a {detected} model (by its layout), but family={family!r} was requested"
            )
    return family_class(detected).from_layout(layout, opts)
