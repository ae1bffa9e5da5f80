"""The estimator a config names, and its state for exact resumption.

Estimators keep a little state between updates (a running reward baseline, running HO
gradient norms for ``j: grad_norm``, the batch PPO reuses, ...). A resumed run must restore
it to continue exactly: ``estimator_state`` uses the estimator's own ``state_dict`` when it
has one, and otherwise a deep copy of its attributes (they are plain Python values and
tensors, written into the checkpoint with ``torch.save``).
"""

from __future__ import annotations

import copy
from typing import Any

from rlr_video.config import EstimatorConfig


def build_estimator(cfg: EstimatorConfig, j_range: tuple[int, int] | None = None):
    """An ``rlr_video.estimators`` instance; ``j_range`` overrides ``cfg.j`` (multi-scale)."""
    from rlr_video.estimators import LR, RLR, FullBP, TruncatedBP

    if cfg.name == "rlr":
        j = tuple(j_range) if j_range is not None else (tuple(cfg.j) if isinstance(cfg.j, list) else cfg.j)
        return RLR(
            h=cfg.h,
            fo_steps=cfg.fo_steps,
            zo=cfg.zo,
            zo_samples=cfg.zo_samples,
            j=j,
            baseline=cfg.baseline,
            normalize=cfg.normalize,
            es_sigma=cfg.es_sigma,
            state_baseline=cfg.state_baseline,
        )
    if cfg.name == "full_bp":
        return FullBP()
    if cfg.name == "truncated_bp":
        return TruncatedBP(K=cfg.K, randomized=cfg.randomized)
    return LR(
        baseline=cfg.baseline,
        normalize=cfg.normalize,
        ppo_clip=cfg.ppo_clip,
        inner_epochs=cfg.inner_epochs,
        state_baseline=cfg.state_baseline,
    )


def estimator_state(estimator) -> dict[str, Any]:
    if hasattr(estimator, "state_dict"):
        return {"state_dict": estimator.state_dict()}
    return {"attributes": copy.deepcopy(vars(estimator))}


def load_estimator_state(estimator, state: dict[str, Any]) -> None:
    if "state_dict" in state:
        estimator.load_state_dict(state["state_dict"])
    else:
        vars(estimator).update(copy.deepcopy(state["attributes"]))
