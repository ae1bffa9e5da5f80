"""Memory of the backprop segment: checkpointing, a cost model, a probe and a planner.

- ``recompute``: frame-chunked gradient checkpointing (``memory_options``, ``MemoryOptions``).
- ``cost_model``: predicted activation bytes of a denoiser call, the decoder and the reward
  (built from ``trace``, ``attention``, ``costs`` and ``reward_cost``).
- ``probe``: measured peak memory of one step (CUDA allocator or a CPU tensor tracker).
- ``planner``: h, checkpoint granularity, frame chunks and ZO mode for a memory budget
  (``budget``: parsing "24GiB" / "auto"; ``meta``: backbones on the meta device).

Names load lazily so that importing the package stays light.
"""

from typing import Any

_LAZY = {
    "MemoryOptions": "rlr_video.memory.recompute",
    "memory_options": "rlr_video.memory.recompute",
    "apply_memory_options": "rlr_video.memory.recompute",
    "CostModel": "rlr_video.memory.cost_model",
    "VideoShape": "rlr_video.memory.shape",
    "measure_peak": "rlr_video.memory.probe",
    "TensorMemoryTracker": "rlr_video.memory.probe",
    "Plan": "rlr_video.memory.planner",
    "parse_budget": "rlr_video.memory.budget",
    "BudgetTooSmall": "rlr_video.memory.planner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
