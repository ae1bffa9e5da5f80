"""Backbones on the meta device: every shape, no weights.

The cost model traces a denoiser call, a decode or a reward on meta tensors (shapes and
dtypes propagate, nothing is computed or allocated). ``meta_backbone`` loads a diffusers
backbone through the same code path users take (``load_backbone``) with every model built
from its ``config.json`` on the meta device, so ``rlr-video plan`` needs a model's config
files and tokenizer, never its weights; the shipped presets' hub ids need neither the hub nor
its cache (``rlr_video.backbones.hub_configs``). ``meta_twin`` gives the meta copy of a model
that is already loaded; ``meta_shell`` a backbone whose models are meta twins (with gradients
on what training touches), and ``meta_conditioning`` the prompt conditioning it expects.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

META = torch.device("meta")
# A denoiser twin this large or larger is rebuilt from its config, never deep-copied.
_COPY_LIMIT = 50_000_000


def meta_twin(model: nn.Module | None) -> nn.Module | None:
    """``model`` rebuilt on the meta device (diffusers / transformers models from their config;
    small plain modules by copy). Parameters keep their dtypes; LoRA layers are not copied."""
    if model is None:
        return None
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    config = getattr(model, "config", None)
    with torch.device(META):
        if hasattr(type(model), "from_config") and config is not None:
            twin = type(model).from_config(_plain_config(config))
        elif hasattr(type(model), "_from_config") and config is not None:
            twin = type(model)._from_config(config)
        else:
            twin = None
    if twin is None:
        size = sum(p.numel() for p in model.parameters())
        if size >= _COPY_LIMIT:
            raise ValueError(f"cannot build a meta copy of {type(model).__name__} ({size} parameters, no config)")
        twin = copy.deepcopy(model)
    twin = twin.to(META)
    twin = nn.Module.to(twin, dtype) if dtype.is_floating_point else twin  # (see _meta_load)
    modes = {name: m.training for name, m in model.named_modules()}
    for name, m in twin.named_modules():  # dropout on or off as in the real model
        m.training = modes.get(name, model.training)
    return twin


def _plain_config(config: Any) -> dict[str, Any]:
    items = dict(config)
    return {k: v for k, v in items.items() if not k.startswith("_") or k == "_class_name"}


def _meta_load(cls: type, folder: Path, torch_dtype: torch.dtype | None = None, **kwargs):
    """One component: a model built from its config on the meta device, anything else loaded."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return None
    with torch.device(META):
        if hasattr(cls, "load_config"):  # diffusers ModelMixin
            model = cls.from_config(cls.load_config(folder))
        else:  # transformers PreTrainedModel
            config = cls.config_class.from_pretrained(folder)
            model = cls._from_config(config)
    model = model.to(META)
    # nn.Module.to, not diffusers' override: that one warns about fp32 modules on every cast
    # (even an empty list of them), which only matters for real weights.
    return nn.Module.to(model, torch_dtype) if torch_dtype is not None else model


@contextlib.contextmanager
def meta_layouts() -> Iterator[None]:
    """Inside, ``Layout.load`` builds models on the meta device from their configs."""
    from rlr_video.backbones import hub_configs
    from rlr_video.backbones import layout as layout_lib

    original = layout_lib.Layout.load

    def load(self, name: str, library: str, class_name: str, **kwargs):
        import importlib

        folder = self.root / name
        lib, cls_name = self.entry(name) or (library, class_name)
        cls = getattr(importlib.import_module(lib), cls_name, None)
        if folder.is_dir() and cls is not None:
            model = _meta_load(cls, folder, kwargs.get("torch_dtype"))
            if model is not None:
                return model
            if "Tokenizer" in cls_name and hub_configs.is_shipped(folder):  # shipped without a vocabulary
                return hub_configs.LengthOnlyTokenizer(folder)
        return original(self, name, library, class_name, **kwargs)

    layout_lib.Layout.load = load
    try:
        with hub_configs.configs_only():  # the shipped presets' hub ids plan without the hub cache
            yield
    finally:
        layout_lib.Layout.load = original


def meta_backbone(path: str | Path, family: str | None = None, **options: Any):
    """``load_backbone(path, ...)`` with every model on the meta device, built from configs.

    LoRA is not injected (``lora_rank=0``): the cost model treats the LoRA targets' inputs as
    saved activations, which is what LoRA's first projection stores.
    """
    from rlr_video.backbones import load_backbone

    options = dict(options, device=META, lora_rank=0, lora_path=None)
    with meta_layouts():
        return load_backbone(path, family=family, **options)


def is_meta(backbone) -> bool:
    model = getattr(backbone, "denoiser", None)
    return isinstance(model, nn.Module) and next(model.parameters()).device.type == "meta"


def meta_shell(backbone):
    """A shallow copy of ``backbone`` whose models are meta twins (the same object if it is
    already on the meta device). Tracing the shell runs the backbone's own ``predict`` and
    ``decode`` code."""
    shell = copy.copy(backbone)
    model = getattr(backbone, "denoiser", None)
    if isinstance(model, nn.Module):
        shell.denoiser = model if is_meta(backbone) else meta_twin(model)
        shell.denoiser.requires_grad_(False)
        targets = getattr(getattr(backbone, "options", None), "lora_targets", None)
        _mark_trainable(shell.denoiser, targets, backbone)
    vae = getattr(backbone, "vae", None)
    if isinstance(vae, nn.Module):
        shell.vae = vae if next(vae.parameters()).device.type == "meta" else meta_twin(vae)
        shell.vae.requires_grad_(False)
    shell.__dict__.pop("decode", None)  # a checkpointing wrapper: trace the plain decode
    shell.__dict__.pop("_rotary_cache", None)
    return shell


def _mark_trainable(model: nn.Module, targets: Sequence[str] | None, backbone) -> None:
    """Gradients to the parameters training touches: LoRA targets' weights stand for their
    LoRA layers (LoRA's first projection saves the same input)."""
    targets = tuple(targets or ("to_q", "to_k", "to_v", "to_out.0"))
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            module.weight.requires_grad_(True)


def meta_conditioning(backbone, batch: int, text_length: int, device: torch.device = META):
    """Conditioning of ``batch`` prompts as ``encode`` would give: on the meta device, built from
    the denoiser's text width; on a real device (a model traced for real), ``encode`` itself."""
    from rlr_video.backbones.text import TextConditioning

    if device.type != "meta":
        with torch.no_grad():
            return backbone.encode([""] * batch)
    model = backbone.denoiser
    cfg = model.config
    # the text encoder's width: caption_channels where the text enters through a caption
    # projection (cross_attention_dim is then the width after it), else the other names for it
    keys = ("caption_channels", "cross_attention_dim", "text_embed_dim", "text_dim")
    dim = next((getattr(cfg, k) for k in keys if getattr(cfg, k, None)), 768)
    guided = float(backbone.guidance_scale) > 1.0
    rows = 2 * batch if guided else batch
    embeds = torch.empty(rows, text_length, dim, device=META, dtype=backbone.dtype)
    # a denoiser that takes the prompts' token mask gets one, as from encode
    mask = torch.ones(rows, text_length, device=META, dtype=torch.bool) if backbone_takes_mask(backbone) else None
    return TextConditioning(embeds, guided, [""] * batch, mask)


def backbone_takes_mask(backbone) -> bool:
    """Whether the backbone's denoiser takes the prompts' token mask (``TextConditioning.mask``)."""
    return bool(getattr(backbone, "takes_text_mask", False))
