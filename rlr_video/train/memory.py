"""The run's ``memory`` section: plan h, checkpointing and frame chunks for ``memory.budget``
(``rlr_video.memory.planner``), or apply fixed ``checkpoint`` / ``frame_chunk`` choices.

``plan_run`` runs before the estimator is built (the plan replaces ``estimator.h``, and the ZO
mode if the configured one cannot fit); ``RunMemory.apply`` then makes the backbone, reward
and estimator honour the chosen options. Every process plans; process 0's plan is used by all
(a probe's measurements could differ slightly between processes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlr_video.config import Config

PLAN_FILE = "memory_plan.json"


@dataclass
class RunMemory:
    options: Any  # rlr_video.memory.MemoryOptions
    plan: Any = None  # rlr_video.memory.planner.Plan, when a budget was planned for
    handle: Any = None

    def apply(self, backbone, reward, estimator) -> RunMemory:
        from rlr_video.memory.checkpointing import apply_memory_options

        self.handle = apply_memory_options(backbone, self.options, reward=reward, estimator=estimator)
        return self


def plan_run(config: Config, backbone, device, output_dir: str | Path | None = None, log=print) -> RunMemory | None:
    """The memory options of the run (None: nothing to do); with a budget, plan them and set
    ``config.estimator.h`` / ``.zo`` to the plan's."""
    from rlr_video.memory.checkpointing import MemoryOptions
    from rlr_video.train.distributed import gather_objects, is_distributed

    mem, est = config.memory, config.estimator
    if mem.budget is None:
        if mem.checkpoint in ("auto", "none") and mem.frame_chunk is None:
            return None
        checkpoint = "none" if mem.checkpoint == "auto" else mem.checkpoint
        return RunMemory(MemoryOptions(checkpoint, mem.frame_chunk))
    from rewards import build_reward
    from rlr_video.memory.cost_model import CostModel
    from rlr_video.memory.planner import Planner

    processes = torch.distributed.get_world_size() if is_distributed() else 1
    reward = build_reward(config.reward)
    cost_model = CostModel(backbone, reward, device=device, processes=processes, sharding=config.train.sharding)
    if mem.probe:
        from rlr_video.memory.probe import calibrate

        calibrate(cost_model, batch=config.train.batch_size, device=device)
    planner = Planner(cost_model, config.train.batch_size, est.fo_steps, est.zo, est.zo_samples, mem.max_h)
    modes = ("none", "block", "call") if mem.checkpoint == "auto" else (mem.checkpoint,)
    plan = planner.plan(mem.budget, modes=modes, chunk=mem.frame_chunk)
    h, zo, options = gather_objects((plan.h, plan.zo, plan.options))[0]
    est.h, est.zo = h, zo  # zo_samples above the remaining steps just means all of them
    if log is not None:
        log(plan.table())
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / PLAN_FILE).write_text(json.dumps(plan.as_dict(), indent=2), encoding="utf-8")
    return RunMemory(options, plan)
