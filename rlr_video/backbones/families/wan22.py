"""Wan 2.2 text-to-video: TI2V-5B and the A14B mixture of two experts (``WanPipeline`` layouts).

Both are ``WanPipeline`` folders with ``WanTransformer3DModel`` denoisers, UMT5 text and a causal
Wan VAE, told apart from Wan 2.1 by their ``model_index.json`` (``wan.wan_variant``); the chain
is Wan 2.1's flow-matching SDE (``wan.py``). What differs, as diffusers 0.42's ``WanPipeline``
(``pipelines/wan/pipeline_wan.py``) computes it:

- **TI2V-5B** (``expand_timesteps: true``): the 2.2 VAE (``z_dim`` 48, ``patch_size`` 2,
  ``is_residual``; 16 pixels per latent, so 32 per token with the transformer's 2x2 patches) and
  one timestep per token: ``(mask[0][0][:, ::2, ::2] * t).flatten()``, the mask all ones for
  text-to-video, given to the transformer as (batch, tokens). The pipeline rounds a height or width
  that is no multiple of 32 down, with a logged warning; here it is an error (``WanBackbone.build``).
- **A14B** (``transformer_2`` and ``boundary_ratio``): at scheduler timestep t the high-noise expert
  ``transformer`` runs while ``t >= boundary_ratio * num_train_timesteps``, with ``guidance_scale``;
  the low-noise expert ``transformer_2`` below, with ``guidance_scale_2`` (default: the same).
  ``predict`` picks both from the step's timestep alone, so a rollout, a replay of a sub-chain and
  a step's log-prob always call the expert that sampled that step. A LoRA goes on both experts or
  on one (``lora_experts``); it is saved as diffusers' Wan LoRA loader reads it, one file per
  expert (``save_lora``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from rlr_video.backbones import lora as lora_lib
from rlr_video.backbones.base import or_default
from rlr_video.backbones.families.wan import WanBackbone, accepts, check_variant, wan_decode_steps
from rlr_video.backbones.family import LatentLayout, register_family
from rlr_video.backbones.layout import BackboneLoadError, Layout
from rlr_video.backbones.options import BackboneOptions

# What every Wan family declares alike.
_WAN = dict(
    pipelines=("WanPipeline",),
    layout=LatentLayout(frame_axis=2, temporal_compression=4, frame_step=4),
    decoder="causal",
    denoiser_kind="transformer",
    shard_blocks=("WanTransformerBlock",),
    checkpoint_blocks=("WanTransformerBlock",),
    decode_steps=wan_decode_steps,
)


@register_family(
    "wan22-ti2v",
    aliases=("wan2.2-ti2v", "wan2.2-ti2v-5b", "wan22-ti2v-5b"),
    denoisers=(("transformer", "WanTransformer3DModel"),),
    accepts=accepts("2.2-ti2v"),
    **_WAN,
)
class WanTI2VBackbone(WanBackbone):
    """Wan 2.2 TI2V-5B as a text-to-video model (no first-frame image)."""

    # Wan2.2's ti2v-5B config (Wan-Video/Wan2.2 wan/configs/wan_ti2v_5B.py): 704x1280 (its sizes
    # are 704*1280 and 1280*704), 121 frames, guidance 5 (WanPipeline's default too).
    default_size = (704, 1280, 121)

    @classmethod
    def from_layout(cls, layout: Layout, options: BackboneOptions) -> WanTI2VBackbone:
        check_variant(layout, "2.2-ti2v")
        return cls.build(layout, options, cls.load_transformer(layout, "transformer", options))

    def model_timestep(self, x: Tensor, t: Tensor) -> Tensor:
        """One timestep per token, (batch, tokens), as ``WanPipeline`` with ``expand_timesteps``:
        its ``mask[0][0][:, ::2, ::2]`` has one entry per 2x2 patch of each latent frame (the
        transformer's patch (1, 2, 2)), every one t (float32, as the pipeline's mask)."""
        _, ph, pw = self.denoiser.config.patch_size
        frames, height, width = x.shape[2:]
        return t.float().reshape(1, 1).expand(x.shape[0], frames * (height // ph) * (width // pw))


EXPERTS = {"high": "transformer", "low": "transformer_2"}  # lora_experts names -> pipeline components
# Where save_lora puts each expert's file, in the folder it is given: the high-noise expert's where
# every family's LoRA goes, the low-noise expert's in a sub-folder named after its component.
EXPERT_FOLDERS = {"high": "", "low": "transformer_2"}


@register_family(
    "wan22-a14b",
    aliases=("wan2.2-a14b", "wan2.2-t2v-a14b", "wan22-t2v-a14b"),
    denoisers=(("transformer", "WanTransformer3DModel"), ("transformer_2", "WanTransformer3DModel")),
    accepts=accepts("2.2-a14b"),
    **_WAN,
)
class WanA14BBackbone(WanBackbone):
    """Wan 2.2 A14B: two experts switched at a boundary timestep (see the module docstring).

    ``denoiser`` is the high-noise expert (``transformer``), ``denoiser_2`` the low-noise one
    (``transformer_2``); ``denoisers`` lists both for LoRA, checkpointing, FSDP and the planner.
    """

    def __init__(
        self,
        *args,
        denoiser_2: nn.Module,
        boundary_timestep: float,
        guidance_scale_2: float | None = None,
        lora_experts: tuple[str, ...] = tuple(EXPERTS),
        **kwargs,
    ):
        self.denoiser_2 = denoiser_2
        self.boundary_timestep = float(boundary_timestep)
        self.lora_experts = _check_experts(lora_experts)
        super().__init__(*args, **kwargs)
        self.guidance_scale_2 = float(or_default(guidance_scale_2, self.guidance_scale))
        if self.guidance_scale <= 1.0 < self.guidance_scale_2:
            raise ValueError(
                f"guidance_scale_2={self.guidance_scale_2} with guidance_scale={self.guidance_scale}: as in "
                "WanPipeline, guidance_scale <= 1 turns the unconditional branch off for both experts"
            )

    @classmethod
    def from_layout(cls, layout: Layout, options: BackboneOptions) -> WanA14BBackbone:
        check_variant(layout, "2.2-a14b")
        ratio = layout.index.get("boundary_ratio")
        if ratio is None:
            raise BackboneLoadError(
                f"{layout.root}/model_index.json names a second expert (transformer_2) but no boundary_ratio: "
                "WanPipeline would never call it"
            )
        high = cls.load_transformer(layout, "transformer", options)
        low = cls.load_transformer(layout, "transformer_2", options)
        for key in ("in_channels", "out_channels", "patch_size", "text_dim"):
            if high.config[key] != low.config[key]:
                raise BackboneLoadError(
                    f"{layout.root}: transformer and transformer_2 differ in {key} "
                    f"({high.config[key]} and {low.config[key]}); the experts must share the latents and the text"
                )
        train_steps = (layout.config("scheduler") or {}).get("num_train_timesteps", 1000)
        return cls.build(
            layout,
            options,
            high,
            denoiser_2=low,
            boundary_timestep=float(ratio) * train_steps,
            guidance_scale_2=options.guidance_scale_2,
            lora_experts=tuple(EXPERTS) if options.lora_experts is None else options.lora_experts,
        )

    # ------------------------------------------------------------------ the experts
    @property
    def denoisers(self) -> list[nn.Module]:
        return [self.denoiser, self.denoiser_2]

    def high_noise(self, step: int) -> bool:
        """WanPipeline: ``transformer`` while the step's timestep t satisfies
        ``t >= boundary_ratio * num_train_timesteps`` (compared as the pipeline does, the
        scheduler's float32 timestep with a Python float)."""
        return bool(self.transition.timestep(step) >= self.boundary_timestep)

    def denoiser_at(self, step: int) -> nn.Module:
        return self.denoiser if self.high_noise(step) else self.denoiser_2

    def guidance_at(self, step: int) -> float:
        return self.guidance_scale if self.high_noise(step) else self.guidance_scale_2

    def _denoise_at(self, step: int, x: Tensor, t: Tensor, embeds: Tensor, **mask: Tensor) -> Tensor:
        return self.call_transformer(self.denoiser_at(step), x, t, embeds)  # UMT5's embeddings come without a mask

    def lora_denoisers(self) -> list[nn.Module]:
        return [self._expert(name) for name in self.lora_experts]

    def _expert(self, name: str) -> nn.Module:
        return self.denoiser if name == "high" else self.denoiser_2

    # ------------------------------------------------------------------ LoRA files
    def save_lora(self, directory: str | Path) -> Path:
        """One diffusers-format file per expert with a LoRA: ``directory/pytorch_lora_weights.safetensors``
        (the high-noise expert) and ``directory/transformer_2/pytorch_lora_weights.safetensors``
        (the low-noise one), both with the ``transformer.`` key prefix diffusers' Wan loader
        expects; ``WanPipeline.load_lora_weights(directory)`` loads the first and
        ``load_lora_weights(directory / "transformer_2", load_into_transformer_2=True)`` the
        second. Returns the first file written."""
        directory = Path(directory)
        written = [
            lora_lib.save_lora(self._expert(name), directory / folder, self.denoiser_component, self._pipeline_class())
            for name, folder in EXPERT_FOLDERS.items()
            if lora_lib.has_lora(self._expert(name))
        ]
        if not written:
            raise ValueError("the model has no LoRA adapter to save (was it loaded with lora_rank=0?)")
        return written[0]

    def load_lora(self, path: str | Path) -> list[nn.Parameter]:
        """Load a folder written by ``save_lora`` (either expert's file, or both). Experts that
        already have a LoRA (a model built with ``lora_rank``) must be exactly those with a file;
        on any error the model is left as it was."""
        folder = Path(path)
        files = {name: folder / sub / lora_lib.WEIGHT_NAME for name, sub in EXPERT_FOLDERS.items()}
        files = {name: file for name, file in files.items() if file.is_file()}
        if not files:
            raise FileNotFoundError(
                f"no LoRA weights at {folder}: expected {folder / lora_lib.WEIGHT_NAME} (the high-noise expert) "
                f"and / or {folder / EXPERT_FOLDERS['low'] / lora_lib.WEIGHT_NAME} (the low-noise expert), as "
                "save_lora writes them"
            )
        adapted = {name for name in EXPERTS if lora_lib.has_lora(self._expert(name))}
        if adapted and adapted != set(files):
            raise ValueError(
                f"LoRA at {folder} is for the expert(s) {sorted(files)}, the model has a LoRA on {sorted(adapted)}"
            )
        before = [p.detach().clone() for p in self.trainable_parameters()]
        try:
            for name, file in files.items():
                lora_lib.load_lora(self._expert(name), file, self.denoiser_component)
        except Exception:
            for name in files:  # put back what the loop changed
                if name not in adapted and lora_lib.has_lora(self._expert(name)):
                    lora_lib.unload_lora(self._expert(name))
            with torch.no_grad():
                for p, value in zip(self.trainable_parameters(), before, strict=True):
                    p.copy_(value)
            raise
        self.lora_experts = tuple(name for name in EXPERTS if name in files)
        params = self.trainable_parameters()
        for p in params:
            p.data = p.data.to(self.device)
        self._set_modes()
        return params

    def __repr__(self) -> str:
        return (
            super().__repr__()[:-1] + f", boundary_timestep={self.boundary_timestep}, "
            f"guidance_2={self.guidance_scale_2}, lora_experts={list(self.lora_experts)})"
        )


def _check_experts(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(names) - set(EXPERTS))
    if unknown or not names:
        raise ValueError(
            f"lora_experts={list(names)}: expected one or both of 'high' (transformer, the high-noise expert) "
            "and 'low' (transformer_2, the low-noise expert)"
        )
    return tuple(name for name in EXPERTS if name in names)
