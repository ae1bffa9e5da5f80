"""The text report of a memory plan (``rlr-video plan``, and the trainer's log with a budget)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlr_video.memory.cost_model import COMPONENTS, gib

if TYPE_CHECKING:
    from rlr_video.memory.planner import Plan


def plan_table(plan: Plan) -> str:
    """A plan as the text table ``rlr-video plan`` prints: the choices and why, the predicted peak
    by phase and the fixed cost, one denoiser call's activations by component, the temporal
    attention share, the recompute multiplier and the paper's Eq. 8 terms (RLR's plans; a costed
    estimator's shows its update and the memory options chosen for it)."""
    e = plan.estimate
    s = plan.shape
    lines = [
        f"memory plan for {s.batch} video(s) x {s.frames} frames x {s.height}x{s.width}, budget {gib(plan.budget)}"
        + (f" per process ({plan.processes} processes, sharding {plan.sharding})" if plan.processes > 1 else ""),
        "",
        f"{'choice':<16} {'value':<14} why",
        f"{'-' * 16} {'-' * 14} {'-' * 40}",
    ]
    memory = [
        ("checkpoint", plan.options.checkpoint),
        ("frame_chunk", str(plan.options.frame_chunk or "-")),
        ("decode_chunk", str(plan.options.decoder_chunk or "-")),
    ]
    if plan.workload is None:  # RLR: the plan chose h and the ZO mode too
        choices = [("h", str(plan.h)), *memory, ("zo", plan.zo)]
    else:  # a costed estimator: its own settings, the plan's memory options
        w = plan.workload
        choices = [("update (costed)", f"{w.grad_calls} x backward"), *memory]
    for (name, value), why in zip(choices, plan.reasons):
        lines.append(f"{name:<16} {value:<14} {why}")
    lines += ["", f"{'predicted peak':<28} {'bytes':>12}", f"{'-' * 28} {'-' * 12}"]
    for name, value in e.__dict__["phases"].items():
        mark = "  <- peak phase" if name == e.bottleneck else ""
        lines.append(f"{'  phase ' + name:<28} {gib(value):>12}{mark}")
    kept = "trajectory + grad buffers" if plan.workload is None or plan.workload.trajectory else "x_0 + grad buffers"
    if plan.workload is not None and plan.workload.param_copies:  # the old policy's EMA weights
        kept = kept.replace(" buffers", "") + " + LoRA copy"
    lines.append(f"{'  ' + kept:<28} {gib(e.persistent):>12}")
    lines.append(f"{'  weights + LoRA + AdamW':<28} {gib(e.fixed):>12}")
    if e.load:
        lines.append(f"{'  (loading, before sharding)':<28} {gib(e.load):>12}  (every model whole, no activations)")
    lines.append(f"{'total':<28} {gib(e.total):>12}  ({100 * e.total / plan.budget:.0f}% of the budget)")
    lines += ["", "one denoiser call's activations (no checkpointing):"]
    total = sum(plan.components.values()) or 1
    for name in COMPONENTS:
        if plan.components.get(name):
            lines.append(f"  {name:<22} {gib(plan.components[name]):>12}  {100 * plan.components[name] / total:5.1f}%")
    lines += [
        "",
        f"temporal attention share     {100 * plan.temporal_share:.1f}% (attention kernel: {plan.attention})",
        f"recompute time multiplier    x{plan.recompute_multiplier:.2f} "
        + ("(vs the same h without checkpointing)" if plan.workload is None else "(vs no checkpointing)"),
    ]
    if plan.eq8:
        q = plan.eq8
        lines.append(
            f"paper Eq. 8 (no checkpointing): B_h = {gib(q['B_h'])}, B_z = {gib(q['B_z'])}, h* = {int(q['h'])}"
        )
    return "\n".join(lines)
