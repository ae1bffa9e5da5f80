"""The options every diffusers backbone accepts, checked in one place.

``load_backbone(path, **options)`` turns its keyword arguments into ``BackboneOptions``;
an unknown name is an error that lists the known ones (a typo in a config must not be
silently ignored). ``None`` means "the family's default" (the default of its diffusers
pipeline, or of its model config).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

DEFAULT_LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.bfloat16`` or one of its names ("bf16", "bfloat16", "fp16", "float32", ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(_DTYPES)} or a torch.dtype")
    return _DTYPES[key]


@dataclass
class BackboneOptions:
    """What ``load_backbone`` can be told. ``None`` means the family's default.

    Attributes:
        dtype: weights' dtype (the chain's latents stay float32; LoRA weights are kept in
            float32 for training whatever this is).
        device: where the models live.
        num_steps: denoising steps T of the chain.
        guidance_scale: classifier-free guidance; <= 1 turns the unconditional branch off
            (as in the diffusers pipelines). Family default: the pipeline's default.
        negative_prompt: the prompt of the unconditional branch.
        eta: DDIM stochasticity (DDIM families; default 1). For flow-matching families it is
            accepted as an alias of ``noise_level``.
        noise_level: the flow-matching SDE's noise level a (default 0.7); an alias of
            ``eta`` for DDIM families. RLR needs a stochastic chain (eta / noise_level > 0).
        height, width, num_frames: the video the chain generates (pixels, frames).
        max_sequence_length: text tokens (T5 families; CLIP uses its tokenizer's length).
        lora_rank: LoRA rank on ``lora_targets`` of the denoiser; 0 or None: no LoRA.
        lora_alpha: LoRA alpha (default: the rank, so the scale is 1).
        lora_targets: module-name suffixes that get LoRA (attention projections by default).
        lora_path: a directory written by ``save_lora`` to load after building, with the rank,
            alpha and targets saved in it (``lora_rank`` and friends then do not apply).
        gradient_checkpointing: checkpoint the denoiser's blocks in backward passes.
        train_mode: leave dropout on (``module.train()``). Off by default: sampling and the
            estimators' replays must see the same function, and UNet3D has dropout 0.1 in
            its temporal convolutions that would otherwise make replays differ.
        decode_chunk_size: frames per VAE call for per-frame (2D) VAEs.
        shift: override the flow-matching shift of the scheduler's config (flow families).
        motion_adapter: AnimateDiff only: a MotionAdapter directory or hub id to combine
            with an SD-1.5 base given as the main path.
        frame_rate: LTX-Video only: the frame rate the rotary embedding is scaled for
            (``LTXPipeline``'s ``frame_rate``, default 25).
        decode_timestep, decode_noise_scale: LTX-Video only, timestep-conditioned VAEs (0.9.1
            and later): the decoder's timestep and how much fixed noise is mixed into the latents
            before decoding (``LTXPipeline``'s options; default 0, and the noise scale defaults
            to the timestep).
    """

    dtype: torch.dtype | str = torch.float32
    device: torch.device | str = "cpu"
    num_steps: int = 25
    guidance_scale: float | None = None
    negative_prompt: str = ""
    eta: float | None = None
    noise_level: float | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    max_sequence_length: int | None = None
    lora_rank: int | None = 4
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS)
    lora_path: str | None = None
    gradient_checkpointing: bool = False
    train_mode: bool = False
    decode_chunk_size: int = 16
    shift: float | None = None
    motion_adapter: str | None = None
    frame_rate: float | None = None
    decode_timestep: float | None = None
    decode_noise_scale: float | None = None

    @classmethod
    def from_kwargs(cls, **options: Any) -> BackboneOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown backbone option(s) {unknown}; known options: {sorted(known)}")
        opts = cls(**options)
        opts.dtype = resolve_dtype(opts.dtype)
        opts.lora_targets = tuple(opts.lora_targets)
        check_device(opts.device)
        for name in ("num_steps", "num_frames", "height", "width"):  # None: the family's default
            value = getattr(opts, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        return opts

    def stochasticity(self, default: float) -> float:
        """eta or noise level, whichever was given (they are one knob under two names)."""
        if self.eta is not None and self.noise_level is not None and self.eta != self.noise_level:
            raise ValueError(f"eta={self.eta} and noise_level={self.noise_level} disagree: give one of them")
        value = self.eta if self.eta is not None else self.noise_level
        return default if value is None else float(value)


def check_device(device: str | torch.device, name: str = "device") -> None:
    """Raise ValueError, naming ``name`` and the device, if torch cannot use it here."""
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{name} {str(device)!r}: {err}") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if parsed.type == "cuda" and (parsed.index or 0) >= count:
        raise ValueError(f"{name} {str(device)!r}: torch sees {count} CUDA GPU(s) on this machine")
