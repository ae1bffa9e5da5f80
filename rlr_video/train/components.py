"""``build_components(config)``: the backbone, reward, estimator and memory plan of a run.

``train``, ``render`` and ``plan`` build what they need here, so a config means the same model,
reward and memory settings to all three. The memory section either fixes ``checkpoint`` /
``frame_chunk``, or gives a ``budget`` that the planner turns into choices (RLR's h and ZO mode,
checkpointing, frame chunks; for an estimator that declares its ``workload`` instead, the
checkpointing and frame chunks of its own update): the plan returns them and the estimator is
built with them; the config itself is never changed. Every process plans; process 0's choices are used by all (a
probe's measurements could differ slightly between processes).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlr_video.config import Config, run_context

PLAN_FILE = "memory_plan.json"


@dataclass
class Components:
    """What a run is made of. ``memory``: the options the backbone, reward and estimator honour
    (None: nothing to checkpoint or chunk); ``plan``: the planner's ``Plan`` when a budget was
    planned for."""

    backbone: Any
    reward: Any = None
    estimator: Any = None
    memory: Any = None  # rlr_video.memory.MemoryOptions
    plan: Any = None  # rlr_video.memory.planner.Plan

    def apply_memory(self, backbone=None, reward=None):
        """Make the backbone (or a wrapper of it), the reward and the estimator honour
        ``memory``; returns the handle whose ``restore()`` undoes it (None: nothing to do)."""
        if self.memory is None:
            return None
        from rlr_video.memory.recompute import apply_memory_options

        return apply_memory_options(
            backbone or self.backbone, self.memory, reward=reward or self.reward, estimator=self.estimator
        )


def build_components(
    config: Config,
    device: torch.device | str = "cpu",
    *,
    reward: bool = True,
    estimator: bool = True,
    meta: bool = False,
    budget: str | int | None = None,
    processes: int = 1,
    sharding: str | None = None,
    attention: str | None = None,
    log=None,
    plan_dir: str | Path | None = None,
) -> Components:
    """The run's components on ``device``.

    Args:
        reward: build the training reward (``config.reward``).
        estimator: build the estimator, planning its memory first (implies ``reward``).
        meta: plan only (``rlr-video plan``): the backbone is built on the meta device from its
            config files, the reward costed from its name (its weights load with
            ``memory.probe``), no estimator; the plan is made for ``budget`` (default
            ``memory.budget``).
        processes, sharding, attention: the training processes the plan is per process for, the
            denoiser's sharding (default ``train.sharding``) and the attention kernel to assume.
        log: where the plan's table goes (e.g. ``print``); None: nowhere.
        plan_dir: where ``memory_plan.json`` is written; None: nowhere.
    """
    if meta:
        return _plan_only(config, device, budget, processes, sharding, attention)
    from rewards import build_reward
    from rlr_video.train.model import build_backbone
    from rlr_video.train.weights_check import check_weights

    check_weights(config)  # every missing weight named at once, before anything heavy loads
    torch.manual_seed(config.train.seed)  # LoRA initialisation: the same in every process and in render
    backbone = build_backbone(config.model, device)
    parts = Components(backbone)
    if not (reward or estimator):
        return parts
    parts.reward = build_reward(config.reward)
    if not estimator:
        return parts
    parts.memory, parts.plan = memory_choices(config, backbone, parts.reward, device, processes)
    settings = parts.plan.estimator_settings() if parts.plan is not None else {}
    if parts.plan is not None:
        from rlr_video.train.distributed import gather_objects

        settings, parts.memory = gather_objects((settings, parts.memory))[0]  # process 0's choices everywhere
        if log is not None:
            from rlr_video.memory.report import plan_table

            log(plan_table(parts.plan))
        if plan_dir is not None:
            Path(plan_dir).mkdir(parents=True, exist_ok=True)
            (Path(plan_dir) / PLAN_FILE).write_text(json.dumps(parts.plan.as_dict(), indent=2), encoding="utf-8")
    parts.estimator = dataclasses.replace(config.estimator, **settings).build(run_context(config))
    return parts


def _plan_only(config: Config, device, budget, processes: int, sharding: str | None, attention: str | None):
    """``build_components(meta=True)``: a backbone without weights, reward stubs, the plan."""
    m, probe = config.model, config.memory.probe
    if probe or m.toy is not None:
        from rlr_video.train.model import build_backbone

        torch.manual_seed(config.train.seed)
        backbone = build_backbone(m, device if probe else "cpu")
    else:
        from rlr_video.memory.meta import meta_backbone
        from rlr_video.train.model import backbone_options

        backbone = meta_backbone(m.path, family=m.family, **backbone_options(m, "meta"))
        backbone.options.lora_rank = m.lora_rank  # costed, not injected
    reward = _loaded_reward(config.reward) if probe else None
    if reward is None:
        from rlr_video.memory.reward_cost import RewardStubs

        bf16 = m.dtype in ("bfloat16", "float16") or config.train.mixed_precision == "bf16"
        reward = RewardStubs(config.reward, itemsize=2 if bf16 else 4)
    budget = config.memory.budget if budget is None else budget
    plan = make_plan(
        config, backbone, reward, device, budget, processes=processes, sharding=sharding, attention=attention
    )
    return Components(backbone, reward, plan=plan, memory=plan.options)


def _loaded_reward(spec):
    """The reward with its weights, or None (with a warning) when they are not here."""
    import warnings

    from rewards import build_reward

    try:
        return build_reward(spec)
    except Exception as err:  # noqa: BLE001 - missing reward weights: cost it by name
        warnings.warn(f"reward not loaded ({err}); costed from its default vision tower", stacklevel=2)
        return None


def memory_choices(config: Config, backbone, reward, device, processes: int = 1):
    """(options, plan) of the run's ``memory`` section: fixed options, or a plan for its budget."""
    from rlr_video.memory.recompute import MemoryOptions

    mem = config.memory
    if mem.budget is None:
        if mem.checkpoint in ("auto", "none") and mem.frame_chunk is None:
            return None, None
        return MemoryOptions("none" if mem.checkpoint == "auto" else mem.checkpoint, mem.frame_chunk), None
    plan = make_plan(config, backbone, reward, device, mem.budget, processes=processes)
    return plan.options, plan


def make_plan(
    config: Config,
    backbone,
    reward,
    device,
    budget,
    *,
    processes: int = 1,
    sharding: str | None = None,
    attention: str | None = None,
):
    """The planner's ``Plan`` of ``config`` for ``budget`` (per process), with ``backbone`` real
    or on the meta device; ``memory.probe`` calibrates the cost model with one measured call."""
    from rlr_video.memory.cost_model import CostModel
    from rlr_video.memory.planner import Planner

    e, mem = config.estimator, config.memory
    sharding = sharding or config.train.sharding
    cost_model = CostModel(backbone, reward, device=device, attention=attention, processes=processes, sharding=sharding)
    if mem.probe:
        from rlr_video.memory.probe import calibrate

        calibrate(cost_model, batch=config.train.batch_size, device=device)
    modes = ("none", "block", "call") if mem.checkpoint == "auto" else (mem.checkpoint,)
    if not e.planned:  # a costed estimator: its update as it declares it, memory options only
        work = e.workload(run_context(config))
        if work is None:
            raise ValueError(f"estimator.name={e.name} declares no workload: the memory planner cannot cost it")
        return Planner(cost_model, config.train.batch_size).plan_workload(budget, work, modes, mem.frame_chunk)
    planner = Planner(cost_model, config.train.batch_size, e.fo_steps, e.zo, e.zo_samples, mem.max_h)
    return planner.plan(budget, modes=modes, chunk=mem.frame_chunk)
