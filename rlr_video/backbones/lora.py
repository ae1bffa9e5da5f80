"""LoRA on a denoiser with peft, saved in the diffusers/PEFT safetensors layout.

The file is what the diffusers training scripts write: ``pytorch_lora_weights.safetensors``
with peft key names (``...to_q.lora_A.weight``) behind the pipeline's component prefix
(``unet.`` or ``transformer.``), and the ``LoraConfig`` in the safetensors metadata
(``lora_adapter_metadata``). Pipelines with a LoRA mixin load it with ``load_lora_weights``;
``load_lora`` here loads it into any model, including ``UNet3DConditionModel``, which has no
peft mixin in diffusers (peft's ``inject_adapter_in_model`` + ``set_peft_model_state_dict``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders import PeftAdapterMixin
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from torch import nn

from rlr_video.backbones.mismatch import describe_mismatch
from rlr_video.file_mode import follow_umask

ADAPTER = "default"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY


def lora_config(rank: int, alpha: float | None = None, targets: Sequence[str] = ()) -> LoraConfig:
    """A plain LoRA config: B initialised to zero, so the adapted model starts as the base."""
    return LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        target_modules=list(targets),
        init_lora_weights=True,
    )


def has_lora(model: nn.Module) -> bool:
    return ADAPTER in getattr(model, "peft_config", {})


def add_lora(model: nn.Module, config: LoraConfig) -> list[nn.Parameter]:
    """Inject LoRA layers into ``model`` and return their parameters (float32, trainable).

    Models with diffusers' peft mixin get it through ``add_adapter`` (so diffusers' own
    adapter switches keep working); others (UNet3D) through ``peft.inject_adapter_in_model``.
    Every non-LoRA parameter of the model is frozen.
    """
    if has_lora(model):
        raise ValueError("the model already has a LoRA adapter")
    matched = [n for n, _ in model.named_modules() if _matches(n, config.target_modules)]
    if not matched:
        raise ValueError(f"lora_targets={sorted(config.target_modules)} match no module of {type(model).__name__}")
    if isinstance(model, PeftAdapterMixin):
        model.add_adapter(config, adapter_name=ADAPTER)
    else:
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    model.requires_grad_(False)
    params = lora_parameters(model)
    for p in params:
        # Half-precision LoRA weights lose the small updates an optimizer makes; peft casts
        # the input to the LoRA weights' dtype and the result back, so float32 LoRA on a
        # bf16 model is exact and cheap (diffusers' training scripts do the same).
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


@contextlib.contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Inside: ``model`` computes without its LoRA (peft's ``enable_adapters(False)`` on every
    tuner layer, as ``PeftModel.disable_adapter`` does), its weights untouched. Each layer's
    previous state and each LoRA weight's ``requires_grad`` are restored on exit (peft's switch
    also toggles ``requires_grad``)."""
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    flags = [(p, p.requires_grad) for p in lora_parameters(model)]
    disabled = [m.disable_adapters for m in layers]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m, off in zip(layers, disabled):
            m.enable_adapters(not off)
        for p, flag in flags:
            p.requires_grad_(flag)


def _matches(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA weights of ``model`` in a stable order (module order)."""
    return [p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """peft key names without the adapter name, e.g. ``...attn1.to_q.lora_A.weight``."""
    return get_peft_model_state_dict(model, adapter_name=ADAPTER)


def adapter_metadata(model: nn.Module) -> dict[str, Any]:
    """The adapter's ``LoraConfig`` as the JSON-able dict diffusers stores next to the weights."""
    config = model.peft_config[ADAPTER].to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def save_lora(model: nn.Module, directory: str | Path, prefix: str, pipeline_cls: type | None) -> Path:
    """Write ``directory/pytorch_lora_weights.safetensors`` for the LoRA on ``model``.

    With ``pipeline_cls`` (a diffusers pipeline with a LoRA mixin) its ``save_lora_weights``
    writes the file, so the layout is diffusers' own; every video pipeline family has one
    (for UNet3D it is ``TextToVideoSDPipeline``'s Stable Diffusion mixin).
    """
    if not has_lora(model):
        raise ValueError("the model has no LoRA adapter to save (was it loaded with lora_rank=0?)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in lora_state_dict(model).items()}
    metadata = adapter_metadata(model)
    if pipeline_cls is not None:
        pipeline_cls.save_lora_weights(
            directory,
            **{f"{prefix}_lora_layers": weights, f"{prefix}_lora_adapter_metadata": metadata},
            safe_serialization=True,
        )
    else:  # the same bytes diffusers writes: prefixed keys, prefixed metadata keys
        from safetensors.torch import save_file

        packed_meta = {f"{prefix}.{k}": v for k, v in metadata.items()}
        save_file(
            {f"{prefix}.{k}": v for k, v in weights.items()},
            directory / WEIGHT_NAME,
            metadata={"format": "pt", METADATA_KEY: json.dumps(packed_meta, indent=2, sort_keys=True)},
        )
    return follow_umask(directory / WEIGHT_NAME)  # safetensors writes 0600


def read_lora(path: str | Path, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a LoRA file (or a directory holding ``pytorch_lora_weights.safetensors``).

    Returns the state dict with the ``prefix.`` removed and peft key names, and the
    adapter config from the metadata if the file has one.
    """
    path = Path(path)
    file = path / WEIGHT_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no LoRA weights at {file} (expected {WEIGHT_NAME} as save_lora writes)")
    try:
        with safe_open(str(file), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(METADATA_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{file}: not a readable safetensors file ({err})") from None
    state = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    if not state:
        found = sorted({k.split(".")[0] for k in tensors})
        raise ValueError(f"{file} has no LoRA weights for {prefix!r} (it has prefixes {found})")
    if any(".lora.down." in k or ".lora.up." in k for k in state):  # the older diffusers naming
        from diffusers.utils import convert_unet_state_dict_to_peft

        state = convert_unet_state_dict_to_peft(state)
    meta = None
    if raw_meta:
        packed = json.loads(raw_meta)
        meta = {k[len(prefix) + 1 :]: v for k, v in packed.items() if k.startswith(prefix + ".")} or None
    return state, meta


def config_from_file(state: dict[str, torch.Tensor], meta: dict[str, Any] | None) -> LoraConfig:
    """The ``LoraConfig`` of a saved adapter: from its metadata, else inferred from shapes
    (rank from ``lora_A``, alpha = rank, targets = the adapted modules' full names)."""
    if meta:
        known = set(LoraConfig.__dataclass_fields__)
        cfg = {k: v for k, v in meta.items() if k in known and k not in ("peft_type", "runtime_config")}
        return LoraConfig(**cfg)
    ranks = {v.shape[0] for k, v in state.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise ValueError(f"cannot infer one LoRA rank from the weights (found ranks {sorted(ranks)})")
    rank = ranks.pop()
    targets = sorted({k.split(".lora_A.")[0] for k in state if ".lora_A." in k})
    return LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=True)


def load_lora(model: nn.Module, path: str | Path, prefix: str) -> list[nn.Parameter]:
    """Load a saved LoRA into ``model``; inject it first if the model has none.

    A model that already has a LoRA must have the same layout (same adapted modules and
    ranks); its weights are replaced. Returns the LoRA parameters.
    """
    state, meta = read_lora(path, prefix)
    injected = not has_lora(model)
    if injected:
        add_lora(model, config_from_file(state, meta))
    try:
        _check_fits(model, state, path)
    except ValueError:
        if injected:  # leave the model as it was
            _remove_lora(model, merge=False)
        raise
    dtype = lora_parameters(model)[0].dtype
    set_peft_model_state_dict(model, {k: v.to(dtype) for k, v in state.items()}, adapter_name=ADAPTER)
    return lora_parameters(model)


def _check_fits(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """Raise ValueError unless ``state`` has exactly the model's LoRA keys and shapes."""
    current = {k: v.shape for k, v in lora_state_dict(model).items()}
    problem = describe_mismatch(current, {k: v.shape for k, v in state.items()})
    if problem:  # another model, or another rank or targets
        raise ValueError(f"LoRA at {path} does not fit the model's LoRA: {problem}")


def _remove_lora(model: nn.Module, merge: bool) -> nn.Module:
    """Put every LoRA layer's base layer back in its place (folding the LoRA in with ``merge``)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            if merge:
                module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base weight and put the base layer back in its place:
    ``model`` becomes a plain model again (saved with ``save_pretrained``, no adapter)."""
    return _remove_lora(model, merge=True)
