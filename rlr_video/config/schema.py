"""The typed schema of a run: one dataclass per section of the YAML file, every key documented.

The ``estimator`` section is the config dataclass of the estimator its ``name`` registers
(``rlr_video.estimators.registry``), so each estimator documents and checks its own keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from rlr_video.estimators.registry import DEFAULT_ESTIMATOR, EstimatorConfig, bounds, config_class


def default_estimator_config() -> EstimatorConfig:
    return config_class(DEFAULT_ESTIMATOR)()


@dataclass
class ToyConfig:
    """The tiny test backbone (``rlr_video.backbones.toy``), used until the testbed model ships."""

    latent_shape: list[int] = field(default_factory=lambda: [2, 4, 8, 8])  # C, F, H, W
    hidden: int = field(default=8, metadata=bounds(1))
    seed: int = 0  # initial weights (every process builds the same model from it)


@dataclass
class ModelConfig:
    """Which video model to fine-tune. Set exactly one of ``toy`` or ``path``.

    ``path`` is a local diffusers folder or a hub id handed to
    ``rlr_video.backbones.load_backbone`` with the options below; ``family`` skips layout
    detection. ``options`` passes extra family-specific keyword arguments through unchanged.
    """

    toy: ToyConfig | None = None
    path: str | None = None
    family: str | None = None  # a registered family (rlr_video.backbones.families); None: detected
    num_steps: int = field(default=25, metadata=bounds(2))
    eta: float = field(default=1.0, metadata=bounds(0.0))  # DDIM eta, or the flow SDE noise level
    guidance_scale: float = field(default=7.5, metadata=bounds(0.0))
    negative_prompt: str | None = None
    height: int | None = field(default=None, metadata=bounds(8))
    width: int | None = field(default=None, metadata=bounds(8))
    frames: int | None = field(default=None, metadata=bounds(1))
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora_rank: int = field(default=8, metadata=bounds(1))
    lora_alpha: float | None = field(default=None, metadata=bounds(0.0))
    lora_targets: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptsConfig:
    """Training prompts: a file (``.txt``, one per line, ``.jsonl`` or ``.csv``) or an inline list.

    A JSONL line is ``{"prompt": "..."}`` or a multi-scale prompt
    ``{"coarse": "...", "mid": "...", "fine": "..."}``: each part conditions its third of the
    denoising steps (coarse the noisiest). With multi-scale prompts, ``ho_stage`` restricts
    the RLR half-order start j to that third (the paper's "Diffusive Chain-of-Thought").
    """

    path: str | None = None
    items: list[str] = field(default_factory=list)
    shuffle: bool = True
    ho_stage: Literal["coarse", "mid", "fine"] | None = None


@dataclass
class OptimConfig:
    """AdamW on the trainable (LoRA) parameters, with global-norm gradient clipping."""

    lr: float = field(default=1e-4, metadata=bounds(0.0))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = field(default=1e-2, metadata=bounds(0.0))
    eps: float = field(default=1e-8, metadata=bounds(0.0))
    max_grad_norm: float | None = field(default=1.0, metadata=bounds(0.0))


@dataclass
class TrainConfig:
    """The optimisation loop. One step is one optimizer update of
    ``batch_size x grad_accum x processes`` videos."""

    steps: int = field(default=100, metadata=bounds(1))
    batch_size: int = field(default=1, metadata=bounds(1))  # videos per micro-batch per process
    # videos per prompt in a micro-batch (GRPO-style groups; pair with estimator.baseline: group)
    group_size: int = field(default=1, metadata=bounds(1))
    grad_accum: int = field(default=1, metadata=bounds(1))  # micro-batches per update
    mixed_precision: Literal["no", "bf16"] = "no"
    # fsdp: the denoiser's frozen weights sharded over the processes (rlr_video.backbones.sharding)
    sharding: Literal["none", "fsdp"] = "none"
    seed: int = 0
    output_dir: str = "runs/rlr-video"
    checkpoint_every: int = field(default=50, metadata=bounds(1))
    keep_last: int = field(default=3, metadata=bounds(1))
    log_with: list[Literal["tensorboard", "wandb"]] = field(default_factory=list)
    project: str = "rlr-video"  # tracker project / run group name
    prompt_baseline: bool = True  # subtract a running per-prompt reward mean (unbiased)
    baseline_window: int = field(default=32, metadata=bounds(1))  # rewards remembered per prompt
    progress: bool = True


@dataclass
class RenderConfig:
    """``rlr-video render``: fixed seeds so every column (base, each LoRA) is comparable."""

    seed: int = 0
    batch_size: int = field(default=4, metadata=bounds(1))
    fps: int = field(default=8, metadata=bounds(1))
    reward: str | dict[str, float | dict[str, Any]] | None = None  # scores in the gallery; None: the training reward
    contact_frames: int = field(default=8, metadata=bounds(1))  # frames per row of a contact sheet
    output_dir: str | None = None  # None: <train.output_dir>/render


@dataclass
class MemoryConfig:
    """Memory planning (``rlr_video.memory``; ``rlr-video plan`` prints the same plan).

    With ``budget`` set, the trainer predicts each setting's peak memory and picks the largest
    RLR ``h`` that fits (``estimator.h`` is replaced; ``max_h`` caps it), then the cheapest
    checkpointing and frame chunks; the ZO mode changes only if the configured one cannot fit.
    An estimator that declares its update's ``workload`` (its config's method) keeps its settings:
    the plan costs them and picks only checkpointing and frame chunks.
    Without a budget, ``checkpoint`` and ``frame_chunk`` (if set) are applied as given.
    """

    budget: str | int | None = None  # "24GiB", "40GB", bytes, or "auto" (this GPU's free memory)
    max_h: int | None = field(default=None, metadata=bounds(1))  # largest h to plan (None: num_steps - 1)
    checkpoint: Literal["auto", "none", "block", "call"] = "auto"  # auto: the planner's choice
    frame_chunk: int | None = field(default=None, metadata=bounds(1))  # images of B*F per chunk (None: planner's)
    probe: bool = False  # calibrate the cost model with one measured call before planning


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    # the section of the estimator ``estimator.name`` registers (rlr_video.estimators): its keys
    # are that estimator's config dataclass (RLRConfig, LRConfig, ...)
    estimator: EstimatorConfig = field(default_factory=default_estimator_config)
    # a name, {name: weight}, or {label: {reward: name, weight: w, **options}} (as rewards.build_reward)
    reward: str | dict[str, float | dict[str, Any]] = "brightness"
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
