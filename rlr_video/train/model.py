"""Building the backbone a config names, and saving / loading its trained weights.

Real backbones come from ``rlr_video.backbones.load_backbone`` and save their LoRA in the
diffusers/PEFT safetensors layout themselves (``save_lora`` / ``load_lora``). Backbones
without LoRA (the toy) save their trainable parameters by name in one safetensors file,
which plays the same role.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlr_video.backbones.mismatch import describe_mismatch
from rlr_video.config import ModelConfig
from rlr_video.file_mode import follow_umask

TRAINABLE_FILE = "trainable_parameters.safetensors"


def build_backbone(cfg: ModelConfig, device: torch.device | str = "cpu"):
    """The configured ``VideoBackbone`` on ``device`` (weights identical in every process)."""
    if cfg.toy is not None:
        from rlr_video.backbones.toy import ToyBackbone

        backbone = ToyBackbone.create(
            num_steps=cfg.num_steps,
            eta=cfg.eta,
            latent_shape=tuple(cfg.toy.latent_shape),
            hidden=cfg.toy.hidden,
            seed=cfg.toy.seed,
            guidance_scale=cfg.guidance_scale,
        )
        return backbone.to(device)
    from rlr_video.backbones import load_backbone  # lazily: heavy

    return load_backbone(cfg.path, family=cfg.family, **backbone_options(cfg, device))


def backbone_options(cfg: ModelConfig, device: torch.device | str = "cpu") -> dict:
    """The keyword options ``load_backbone`` receives (unset ones left to the family)."""
    options = {
        "num_steps": cfg.num_steps,
        "eta": cfg.eta,
        "guidance_scale": cfg.guidance_scale,
        "negative_prompt": cfg.negative_prompt,
        "height": cfg.height,
        "width": cfg.width,
        "num_frames": cfg.frames,
        "dtype": getattr(torch, cfg.dtype),
        "device": device,
        "lora_rank": cfg.lora_rank,
        "lora_alpha": cfg.lora_alpha,
        "lora_targets": cfg.lora_targets,
    }
    return {k: v for k, v in options.items() if v is not None} | cfg.options


def _named_trainable(backbone) -> dict[str, torch.nn.Parameter]:
    """Stable names for the trainable parameters (their names in the owning module)."""
    trainable = backbone.trainable_parameters()
    modules = [m for m in vars(backbone).values() if isinstance(m, torch.nn.Module)]
    names = {}
    for p in trainable:
        name = next((n for m in modules for n, q in m.named_parameters() if q is p), None)
        if name is None:
            name = f"param_{len(names)}"  # a bare parameter: its position names it
        names[name] = p
    if len(names) != len(trainable):
        raise ValueError("trainable parameters do not have unique names")
    return names


def save_weights(backbone, directory: str | Path) -> None:
    """Write the trained weights to ``directory`` (LoRA layout, or one safetensors file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(backbone, "save_lora"):
        backbone.save_lora(directory)
        return
    from safetensors.torch import save_file

    tensors = {n: p.detach().cpu().contiguous() for n, p in _named_trainable(backbone).items()}
    save_file(tensors, directory / TRAINABLE_FILE)
    follow_umask(directory / TRAINABLE_FILE)  # safetensors writes 0600


def load_weights(backbone, directory: str | Path) -> None:
    """Load weights written by ``save_weights`` (or any LoRA folder the backbone reads)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no weights folder at {directory}")
    if (directory / TRAINABLE_FILE).is_file():
        from safetensors.torch import load_file

        try:
            tensors = load_file(directory / TRAINABLE_FILE)
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{directory / TRAINABLE_FILE}: not a readable safetensors file ({err})") from None
        params = _named_trainable(backbone)
        problem = describe_mismatch({n: p.shape for n, p in params.items()}, {n: t.shape for n, t in tensors.items()})
        if problem:
            raise ValueError(
                f"{directory / TRAINABLE_FILE} does not fit the model: {problem}. "
                "The weights were saved from another model or LoRA rank"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(tensors[name].to(p.device, p.dtype))
        return
    if hasattr(backbone, "load_lora"):
        backbone.load_lora(directory)
        return
    raise FileNotFoundError(
        f"{directory} holds no {TRAINABLE_FILE}, and a {type(backbone).__name__} cannot load a LoRA folder: "
        "were these weights saved from another model?"
    )
