"""What ``rlr-video train`` prints at the end of a run: steps, reward, and where the files are."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path

from rlr_video.train.checkpoint import latest_checkpoint, weights_dir
from rlr_video.train.metrics import CURVE_FILE, read_metrics


def run_summary(output_dir: str | Path, imports: Sequence[str] = ()) -> str:
    """A few lines on the run in ``output_dir``, from its ``metrics.jsonl`` and checkpoints.

    The reward is the training batch mean (the trainer runs no separate evaluation), of the
    first and last logged steps and of the first and last tenth of the run, which are less
    noisy; ``tools/demo_report.py`` compares base and fine-tuned on a fixed evaluation set.
    The closing ``render`` command runs as printed: it repeats the run's ``--import`` modules
    (``imports``), without which its config's custom reward would be unknown, and shell-quotes.
    """
    output_dir = Path(output_dir)
    metrics = output_dir / "metrics.jsonl"
    logged = read_metrics(metrics)
    rows = [r for r in logged if r.get("reward_mean") is not None]
    steps = logged[-1]["step"] if logged else 0
    seconds = sum(r.get("step_time") or 0.0 for r in logged) / max(len(logged), 1)
    lines = [f"training done: {steps} steps, {seconds:.2f} s/step"]
    if rows:
        first, last = rows[0], rows[-1]
        window = max(1, math.ceil(len(rows) / 10))
        head = sum(r["reward_mean"] for r in rows[:window]) / window
        tail = sum(r["reward_mean"] for r in rows[-window:]) / window
        smoothed = f"; first {window} steps {head:.4f}, last {window} steps {tail:.4f}" if window > 1 else ""
        lines.append(
            f"  reward (training batch mean): step {first['step']} {first['reward_mean']:.4f}, "
            f"step {last['step']} {last['reward_mean']:.4f}{smoothed}"
        )
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is not None:
        lines.append(f"  checkpoints: {checkpoint.parent} (latest {checkpoint.name})")
        lines.append(f"  LoRA: {weights_dir(checkpoint)}")
    lines.append(f"  log: {metrics}, reward curve {output_dir / CURVE_FILE}, config {output_dir / 'config.yaml'}")
    if checkpoint is not None:
        command = ["rlr-video", "render", str(output_dir / "config.yaml"), "--lora", str(checkpoint)]
        command += [word for module in imports for word in ("--import", module)]
        lines.append(f"  preview: {shlex.join(command)}")
    return "\n".join(lines)
