"""What ``rlr-video train`` prints at the end of a run: steps, reward, the held-out guard, and
where the files are."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path

from rlr_video.train.checkpoint import latest_checkpoint, weights_dir
from rlr_video.train.metrics import CURVE_FILE, EVAL_PREFIX, EVAL_TRAINING_REWARD, eval_series, read_metrics


def run_summary(output_dir: str | Path, imports: Sequence[str] = ()) -> str:
    """A few lines on the run in ``output_dir``, from its ``metrics.jsonl`` and checkpoints.

    The reward is the training batch mean, of the first and last logged steps and of the first
    and last tenth of the run, which are less noisy. With a held-out evaluation (``train.eval``)
    each held-out reward's first and last evaluation follow, and a warning when the training
    reward rose while a held-out one fell (:func:`hacking_warnings`); ``tools/demo_report.py``
    compares base and fine-tuned on the testbed's fixed evaluation set.
    The closing ``render`` command runs as printed: it repeats the run's ``--import`` modules
    (``imports``), without which its config's custom reward would be unknown, and shell-quotes.
    """
    output_dir = Path(output_dir)
    metrics = output_dir / "metrics.jsonl"
    logged = read_metrics(metrics)
    rows = [r for r in logged if r.get("reward_mean") is not None]
    trained = [r for r in logged if r.get("step_time") is not None]  # the held-out row of step 0 has none
    steps = logged[-1]["step"] if logged else 0
    seconds = sum(r["step_time"] for r in trained) / max(len(trained), 1)
    lines = [f"training done: {steps} steps, {seconds:.2f} s/step"]
    if rows:
        first, last = rows[0], rows[-1]
        window, head, tail = tenths(rows)
        smoothed = f"; first {window} steps {head:.4f}, last {window} steps {tail:.4f}" if window > 1 else ""
        lines.append(
            f"  reward (training batch mean): step {first['step']} {first['reward_mean']:.4f}, "
            f"step {last['step']} {last['reward_mean']:.4f}{smoothed}"
        )
    lines += heldout_lines(logged)
    lines += hacking_warnings(logged)
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


def tenths(rows: list[dict]) -> tuple[int, float, float]:
    """(window, mean of the first window, mean of the last): the training batch means' first and
    last tenth of the run (at least one step each)."""
    window = max(1, math.ceil(len(rows) / 10))
    head = sum(r["reward_mean"] for r in rows[:window]) / window
    tail = sum(r["reward_mean"] for r in rows[-window:]) / window
    return window, head, tail


def heldout_lines(logged: list[dict]) -> list[str]:
    """Each held-out metric's first and last evaluation (the same videos, fixed seeds)."""
    series = eval_series(logged)
    if not series:
        return []
    width = max(len(key) for key in series) - len(EVAL_PREFIX)
    lines = ["  held-out evaluation (train.eval: the same prompts and seeds each time), first -> last:"]
    for key, points in series.items():
        (a, first), (b, last) = points[0], points[-1]
        name = "training reward" if key == EVAL_TRAINING_REWARD else key.removeprefix(EVAL_PREFIX)
        lines.append(f"    {name:<{max(width, 15)}}  step {a} {first:.4f} -> step {b} {last:.4f} ({last - first:+.4f})")
    return lines


def hacking_warnings(logged: list[dict]) -> list[str]:
    """A warning per held-out reward that fell while the training reward rose: possible reward hacking.

    The test: the training batch mean of the last tenth of the run is above that of the first
    tenth, and the held-out reward's last evaluation is below its first (the same held-out
    videos, so the two differ only by the weights). Both are single comparisons, not
    significance tests; the message gives the numbers.
    """
    rows = [r for r in logged if r.get("reward_mean") is not None]
    series = {k: v for k, v in eval_series(logged).items() if k != EVAL_TRAINING_REWARD}
    if not rows or not series:
        return []
    window, head, tail = tenths(rows)
    if not tail > head:
        return []
    lines = []
    for key, points in series.items():
        (a, first), (b, last) = points[0], points[-1]
        if len(points) > 1 and last < first:
            lines.append(
                f"  WARNING: possible reward hacking: the training reward rose (batch mean of the first {window} "
                f"steps {head:.4f}, of the last {window} {tail:.4f}) while held-out {key.removeprefix(EVAL_PREFIX)} "
                f"fell (step {a} {first:.4f}, step {b} {last:.4f}, on the same held-out videos)"
            )
    return lines
