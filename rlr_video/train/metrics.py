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
    """Mean reward per step (and a moving average) from a metrics file, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path) if r.get("reward_mean") is not None]
    steps = [r["step"] for r in rows]
    rewards = [r["reward_mean"] for r in rows]
    window = max(1, len(rewards) // 20)
    smooth = [
        sum(rewards[max(0, i - window + 1) : i + 1]) / len(rewards[max(0, i - window + 1) : i + 1])
        for i in range(len(rewards))
    ]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, rewards, alpha=0.35, label="reward (batch mean)")
    ax.plot(steps, smooth, label=f"moving average ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
