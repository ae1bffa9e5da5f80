"""Summary statistics of reward scores: mean, sample std and a Student-t 95% confidence interval,
and the score of a set of videos the way each reward's reference reports it (its weights)."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Two-sided 95% quantiles t_{0.975, df} for df = 1..30 (standard tables).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom.

    A table up to 30, then the Cornish–Fisher expansion around the normal quantile (exact to
    about 1e-4 there, and better as ``df`` grows); no scipy needed.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def summarize(
    values: Sequence[float], weights: Sequence[float] | None = None
) -> dict[str, float | int | list[float] | None]:
    """``{"n", "mean", "std", "ci95": [low, high]}``; std and ci95 are ``None`` below two values.

    With ``weights`` (a reference's weighted mean over videos, e.g. VBench's F − 1 per video) the
    mean is the weighted mean and its interval half-width t · s · √(Σw²) / Σw, with s the values'
    sample std: the standard error of a weighted mean of independent values of one variance
    (Kish's effective sample size (Σw)² / Σw²). Equal weights give the plain interval.
    """
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    if weights is not None and len(weights) != n:
        raise ValueError(f"got {n} values but {len(weights)} weights")
    if weights is None or math.fsum(weights) <= 0:
        weights = [1.0] * n
    total = math.fsum(weights)
    mean = math.fsum(w * v for w, v in zip(weights, values, strict=True)) / total
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    plain = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - plain) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std * math.sqrt(math.fsum(w * w for w in weights)) / total
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def reference_weights(reward: object, frame_counts: Sequence[int]) -> list[float] | None:
    """The per-video weights of the reward's reference mean over a set of videos
    (``aggregate_weights``: VBench's consistency weights a video by F − 1), or None for a plain mean."""
    weigh = getattr(reward, "aggregate_weights", None)
    return [float(w) for w in weigh(list(frame_counts))] if callable(weigh) else None


def reference_mean(reward: object, scores: Sequence[float], frame_counts: Sequence[int]) -> float:
    """The score of a set of videos as the reward's reference reports it: its ``aggregate``
    (VBench's consistency weights each video by F − 1) or else the plain mean."""
    aggregate = getattr(reward, "aggregate", None)
    if callable(aggregate):
        return float(aggregate(list(scores), list(frame_counts)))
    return math.fsum(scores) / len(scores) if scores else float("nan")
