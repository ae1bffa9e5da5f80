"""Training metrics: one JSON line per step in ``metrics.jsonl``, and the reward curve PNG.

``metrics.jsonl`` is always written (by the main process only); TensorBoard / W&B receive the
same numbers through accelerate's trackers when the config asks. On resume the file is cut
back to the checkpoint's step, so the lines a killed run wrote after its last checkpoint are
replaced by the resumed run's, and the file ends up as an uninterrupted run's would.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "reward_curve.png"
EVAL_PREFIX = "eval/"  # held-out evaluation (train.eval): eval/<held-out reward column>
EVAL_TRAINING_REWARD = EVAL_PREFIX + "training_reward"  # the training reward on the held-out videos


class MetricsWriter:
    """Appends step records to ``<output_dir>/metrics.jsonl``."""

    def __init__(self, output_dir: str | Path, resume_step: int | None = None):
        self.path = Path(output_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [row for row in read_metrics(self.path) if row["step"] <= resume_step]
            self.path.write_text("".join(_line(row) for row in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(_line(record))
            f.flush()


def _line(record: dict[str, Any]) -> str:
    # NaN/inf are not JSON: written as null so every line stays parseable.
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    return json.dumps(clean, sort_keys=True) + "\n"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file (a torn last line, from a kill mid-write, is dropped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def plot_reward_curve(metrics_path: str | Path, out_path: str | Path) -> Path:
    """Mean reward per step (and a moving average) from a metrics file, as a PNG.

    With a held-out evaluation (``train.eval``) the training reward on the held-out videos joins
    the top panel, and a second panel below, on the same steps, shows each held-out reward
    (``eval/*``), one point per evaluation: a training reward that climbs while a held-out one
    falls is seen at once.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    logged = read_metrics(metrics_path)
    rows = [r for r in logged if r.get("reward_mean") is not None]
    steps = [r["step"] for r in rows]
    rewards = [r["reward_mean"] for r in rows]
    window = max(1, len(rewards) // 20)
    smooth = [
        sum(rewards[max(0, i - window + 1) : i + 1]) / len(rewards[max(0, i - window + 1) : i + 1])
        for i in range(len(rewards))
    ]
    evals = eval_series(logged)
    on_heldout = evals.pop(EVAL_TRAINING_REWARD, None)
    panels = 2 if evals else 1
    fig, axes = plt.subplots(panels, 1, figsize=(6, 3.5 * panels), dpi=100, sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot(steps, rewards, alpha=0.35, label="reward (batch mean)")
    ax.plot(steps, smooth, label=f"moving average ({window})")
    if on_heldout:
        ax.plot(*zip(*on_heldout, strict=True), "--", marker="o", markersize=3, label="on the held-out videos")
    ax.set_ylabel("training reward")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    if evals:
        low = axes[1][0]
        for key, points in evals.items():
            low.plot(*zip(*points, strict=True), marker="o", markersize=3, label=key.removeprefix(EVAL_PREFIX))
        low.set_ylabel("held-out rewards")
        low.legend(loc="best", fontsize="small")
        low.grid(alpha=0.3)
    axes[-1][0].set_xlabel("step")
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def eval_series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Each ``eval/*`` metric of a run as (step, value) points, in step order."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(EVAL_PREFIX) and value is not None:
                series.setdefault(key, []).append((row["step"], float(value)))
    return series
