"""Choosing h, checkpointing, frame chunks and the ZO mode for a memory budget.

One RLR update runs four phases one after another, so its peak is the largest of them on
top of what lives through the whole update (the stored trajectory, gradient buffers):

- rollout: T denoiser calls without gradients;
- FO: ``fo_steps`` calls with gradients, the decoder and the reward, then their backward;
- HO: the h calls of the sub-chain with gradients, then their backward;
- ZO ``latent_lr``: one call with backward per sampled step (``param_es``: forward only).

``Planner.update_peak`` composes them from the cost model; ``Planner.plan`` searches every
checkpoint granularity (none / block / call) and frame chunk for the largest h whose
predicted peak plus the fixed cost (weights, LoRA, AdamW state) fits the budget, then the
fastest such setting (fewest recomputed forwards, then the fewest chunks).

Without checkpointing the HO phase grows by one call's activations per step of h, which is
the paper's Eq. 8 (docs/estimator-math.md): h* = min(floor((B - B_z (T-1)) / (B_h - B_z)),
floor(T V_z / (2 (V_z - V_h)) - 1)); ``eq8_h`` is that formula and ``Plan.eq8`` its terms.
With each replayed call checkpointed, a step of h costs only its stored latent, so long
sub-chains fit where full backprop never could.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from rlr_video.memory.budget import parse_budget
from rlr_video.memory.cost_model import CostModel, VideoShape, gib
from rlr_video.memory.recompute import MemoryOptions, decoder_is_frame_local, decoder_steps_checkpointed

# RLR's ZO modes, as the planner costs them (rlr_video.estimators.rlr takes them from here).
ZO_MODES = ("latent_lr", "param_es", "none")
# Forward-pass equivalents of one call: forward 1, backward 2 (a common rule of thumb).
BACKWARD = 2.0


@dataclass(frozen=True)
class Workload:
    """What one update of an estimator runs, for the estimators whose settings the planner does
    not choose: their config's ``workload(run)`` declares it and ``plan_workload``
    costs it. Every update samples the chain first (T forward calls, then decode and reward
    without gradients).

    Attributes:
        grad_calls: denoiser calls with backward, each backpropagated before the next one is
            built (a loss per step), so one call's activations are alive at a time.
        extra_forwards: forward-only denoiser calls besides the rollout (a reference model's or
            an old policy's prediction next to each call with backward).
        forwards_hold_graph: the forward-only calls run while a call with backward holds its
            graph (between its forward and its backward, as GRPO's reference prediction), so
            their peak without gradients comes on top of what that call saves; False: they
            run before it (NFT's old and reference predictions).
        trajectory: the whole chain's latents and noises are kept through the update (likelihood
            ratios need x_t and x_{t-1}); False: only the clean sample x_0.
        param_copies: extra copies of the trainable parameters kept (an EMA "old" policy).
    """

    grad_calls: int
    extra_forwards: int = 0
    forwards_hold_graph: bool = False
    trajectory: bool = True
    param_copies: int = 0


class BudgetTooSmall(ValueError):
    """Not even h = 1 fits; the message says the smallest budget that would and which knob
    frees the most."""

    def __init__(self, message: str, smallest: int, knobs: dict[str, int]):
        super().__init__(message)
        self.smallest, self.knobs = smallest, knobs


def eq8_h(budget: float, b_h: float, b_z: float, steps: int, v_h: float | None = None, v_z: float | None = None) -> int:
    """The paper's Eq. 8: the largest h whose HO steps (``b_h`` each, ``b_z`` for every other
    step) fit ``budget``, capped by the variance optimum when V_h, V_z are given."""
    h = math.floor((budget - b_z * (steps - 1)) / (b_h - b_z))
    if v_h is not None and v_z is not None and v_z > v_h:
        h = min(h, math.floor(steps * v_z / (2 * (v_z - v_h)) - 1))
    return h


@dataclass
class Estimate:
    """Predicted memory (bytes) and compute of one update for one setting."""

    h: int
    options: MemoryOptions
    zo: str
    phases: dict[str, int]  # rollout, fo, ho, zo: activation peak of each phase
    persistent: int  # trajectory + gradient buffers, alive through the update
    fixed: int  # weights, LoRA, optimizer state
    forwards: float  # forward-pass equivalents of the update
    load: int = 0  # with sharding: the weights a process holds whole while loading

    @property
    def update(self) -> int:
        """Peak bytes one update adds (what a probe around ``estimate`` measures)."""
        return self.persistent + max(self.phases.values())

    @property
    def total(self) -> int:
        return self.fixed + self.update

    @property
    def bottleneck(self) -> str:
        return max(self.phases, key=self.phases.get)


@dataclass
class Plan:
    """The chosen setting and why."""

    budget: int
    h: int
    options: MemoryOptions
    zo: str
    estimate: Estimate
    baseline: Estimate  # the same h without checkpointing or chunks (time reference)
    shape: VideoShape
    components: dict[str, int]  # one call's activations by component (no checkpointing)
    temporal_share: float
    attention: str
    reasons: list[str] = field(default_factory=list)
    eq8: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, float] = field(default_factory=dict)
    processes: int = 1
    sharding: str = "none"
    workload: Workload | None = None  # a costed estimator's update; None: RLR's

    def estimator_settings(self) -> dict[str, Any]:
        """The estimator config keys the plan chooses (``dataclasses.replace`` them in): RLR's h
        and ZO mode; nothing for a costed estimator (its plan chooses memory options only)."""
        return {} if self.workload is not None else {"h": self.h, "zo": self.zo}

    @property
    def recompute_multiplier(self) -> float:
        return self.estimate.forwards / self.baseline.forwards

    def as_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {
            "budget": self.budget,
            "h": self.h,
            "checkpoint": self.options.checkpoint,
            "frame_chunk": self.options.frame_chunk,
            "decode_chunk": self.options.decoder_chunk,
            "reward_chunk": self.options.reward_images,
            "zo": self.zo,
            "predicted_peak": e.total,
            "predicted_update": e.update,
            "fixed": e.fixed,
            "phases": dict(e.phases),
            "persistent": e.persistent,
            "components": dict(self.components),
            "temporal_share": self.temporal_share,
            "recompute_multiplier": self.recompute_multiplier,
            "attention": self.attention,
            "eq8": dict(self.eq8),
            "reasons": list(self.reasons),
            "calibration": dict(self.calibration),
            "processes": self.processes,
            "sharding": self.sharding,
            "load": e.load,
            "workload": dataclasses.asdict(self.workload) if self.workload is not None else None,
        }


class Planner:
    """Composes one update's memory from a ``CostModel`` and searches the settings.

    Args:
        cost_model: the backbone's (and reward's) cost model.
        batch: videos per micro-batch.
        fo_steps, zo, zo_samples: the estimator's settings (``zo_samples`` None: all steps).
        max_h: the largest h to consider (default: every step but the FO ones).
        variance_ratio: V_h / V_z for Eq. 8's variance cap (None: no cap).
        shape: the video (default: the backbone's).
    """

    def __init__(
        self,
        cost_model: CostModel,
        batch: int = 1,
        fo_steps: int = 1,
        zo: str = "latent_lr",
        zo_samples: int | None = None,
        max_h: int | None = None,
        variance_ratio: float | None = None,
        shape: VideoShape | None = None,
    ):
        if zo not in ZO_MODES:
            raise ValueError(f"zo={zo!r}: expected one of {ZO_MODES}")
        self.cm = cost_model
        self.batch, self.fo_steps, self.zo, self.zo_samples = batch, fo_steps, zo, zo_samples
        self.steps = cost_model.backbone.num_steps
        self.max_h = min(max_h or self.steps - fo_steps, self.steps - fo_steps)
        self.variance_ratio = variance_ratio
        self.shape = shape or cost_model.default_shape(batch)

    # ---------------------------------------------------------------- one setting

    def rows(self, shape: VideoShape | None = None) -> int:
        """Length of the B*F axis frame-local denoiser work sees (CFG doubles it)."""
        shape = shape or self.shape
        lat = self.cm.latent_shape(shape)
        frames = lat[self.cm.family.layout.frame_axis - 1]
        return shape.batch * (2 if self.cm.guided else 1) * frames

    def estimate(
        self, h: int, options: MemoryOptions, zo: str | None = None, shape: VideoShape | None = None
    ) -> Estimate:
        """Predicted memory and compute of one update."""
        cm, zo = self.cm, zo or self.zo
        shape = shape or self.shape
        T = self.steps
        latent = cm.latent_bytes(shape)
        first, later = cm.call(shape, input_grad=False), cm.call(shape, input_grad=True)
        fixed = cm.fixed()
        persistent = (2 * T + 1) * latent + fixed.gradients
        chain = 3 * latent  # a replayed step's x, mean and output outside the denoiser

        def calls_phase(n: int) -> tuple[int, int]:
            """(held by all n calls, the worst extra at one call's backward): the backward
            runs from the last call to the first; the calls before the one in backward are
            still held, the ones after it are freed."""
            costs = [first] + [later] * (n - 1)
            helds = [c.held(options) + chain for c in costs]
            worst = max(sum(helds[:k]) + costs[k].peak(options, True) + chain for k in range(n))
            return sum(helds), worst - sum(helds)

        rollout = first.trace.forward_peak * first.scale
        if zo == "param_es":
            rollout += 2 * fixed.trainable
        fo_held, fo_call_extra = calls_phase(self.fo_steps)
        fo = fo_held + max(cm.tail(shape, options), fo_call_extra)
        ho_held, ho_extra = calls_phase(h)
        ho = ho_held + ho_extra
        zo_peak = first.peak(options) + chain if zo == "latent_lr" else 0
        phases = {"rollout": int(rollout), "fo": int(fo), "ho": int(ho), "zo": int(zo_peak)}
        forwards = self.forwards(h, options, zo)
        return Estimate(h, options, zo, phases, int(persistent), fixed.total, forwards, fixed.load)

    def forwards(self, h: int, options: MemoryOptions, zo: str) -> float:
        """Forward-pass equivalents of an update: T forwards to sample; each call with
        gradients 1 + BACKWARD, plus one more forward per level of checkpointing."""
        extra = (1 if options.calls else 0) + (1 if options.units else 0)
        rest = self.steps - self.fo_steps - h
        m = rest if self.zo_samples is None else min(self.zo_samples, rest)
        grad_calls = self.fo_steps + h
        zo_calls = m if zo == "latent_lr" else 0
        return (
            self.steps + grad_calls * (1 + BACKWARD + extra) + zo_calls * (1 + BACKWARD + (1 if options.units else 0))
        )

    # ---------------------------------------------------------------- a costed estimator

    def estimate_workload(self, work: Workload, options: MemoryOptions, shape: VideoShape | None = None) -> Estimate:
        """Predicted memory and compute of one update of a costed estimator (``Workload``).

        Its phases run one after another: ``rollout`` (T calls without gradients), ``score``
        (decoding x_0 and the reward without gradients: the decoder's traced forward peak, or the
        frames with about two of the reward's largest activations, whichever is more) and
        ``train`` (one call with backward at a time, on a stored or forward-noised latent that
        needs no gradient; forward-only calls before it peak lower, and one run while it holds its
        graph, ``forwards_hold_graph``, adds its forward peak to what the call saves). Kept through the
        update: the trajectory (or x_0 and the noised latent), the gradient buffers and
        ``param_copies`` copies of the trainable parameters."""
        cm = self.cm
        shape = shape or self.shape
        latent = cm.latent_bytes(shape)
        call = cm.call(shape, input_grad=False)
        fixed = cm.fixed()
        stored = (2 * self.steps + 1) * latent if work.trajectory else 2 * latent
        persistent = stored + fixed.gradients + work.param_copies * fixed.trainable
        reward = cm.reward_cost(shape)  # without gradients: the frames and its largest activations
        score = max(cm.decode_forward(shape), cm.frames_bytes(shape) + 2 * reward.scale * reward.largest)
        # The rollout stores the whole chain while it samples, even when only x_0 is kept after.
        sampling = 0 if work.trajectory else (2 * self.steps + 1) * latent - stored
        train = call.peak(options)
        if work.extra_forwards and work.forwards_hold_graph:
            # a forward-only call between the call's forward and its backward: its own peak
            # (e.g. HunyuanVideo 1.5's converted joint attention mask) on top of the saved graph
            train = max(train, call.held(options, in_chain=False) + call.trace.forward_peak * call.scale)
        phases = {
            "rollout": int(call.trace.forward_peak * call.scale + sampling),
            "score": int(score),
            "train": int(train + 3 * latent),  # x_t, the output and the mean beside it
        }
        units = 1 if options.units else 0
        forwards = self.steps + work.extra_forwards + work.grad_calls * (1 + BACKWARD + units)
        return Estimate(0, options, "n/a", phases, int(persistent), fixed.total, forwards, fixed.load)

    def plan_workload(
        self,
        budget: int | str,
        work: Workload,
        modes: tuple[str, ...] = ("none", "block"),
        chunk: int | None = None,
    ) -> Plan:
        """The memory options for a costed estimator's update: the predicted peak of its settings
        (nothing of the estimator is chosen), with the cheapest checkpointing and frame chunks
        that fit ``budget`` (fewest recomputed forwards, then the fewest chunks); its peak is
        reported even when none fits (``BudgetTooSmall`` names it). Call checkpointing is RLR's
        (its sub-chain's calls held together); here each call's graph is alone, so recomputing it
        whole saves nothing: a configured ``call`` searches ``none`` and ``block`` instead."""
        budget = parse_budget(budget, self.cm.device)
        options = self.candidates(tuple(m for m in modes if m != "call") or ("none", "block"), chunk=chunk)
        estimates = [self.estimate_workload(work, o) for o in options]
        fits = [e for e in estimates if e.total <= budget]
        if not fits:
            smallest = min(estimates, key=lambda e: e.total)
            raise BudgetTooSmall(
                f"memory budget {gib(budget)} is too small for this estimator's update: its smallest plan "
                f"({smallest.options.checkpoint}, frame chunk {smallest.options.frame_chunk or '-'}) needs "
                f"{gib(smallest.total)} ({smallest.bottleneck} phase; weights, LoRA and AdamW state "
                f"{gib(smallest.fixed)})",
                smallest.total,
                {},
            )
        chosen = min(
            fits,
            key=lambda e: (e.forwards, e.options.frame_chunk is not None, -(e.options.frame_chunk or 0), e.total),
        )
        plain = self.estimate_workload(work, MemoryOptions())
        reasons = [
            f"{work.grad_calls} call(s) with backward, one at a time; {work.extra_forwards} more forward-only",
            "everything fits without recomputation"
            if chosen.options.checkpoint == "none"
            else f"without it the peak is {gib(plain.total)}",
            f"{self.rows()} rows in chunks of {chosen.options.frame_chunk}"
            if chosen.options.frame_chunk
            else "frame-local work fits unchunked",
            "decode and reward run without gradients",
        ]
        comps = self.cm.call(self.shape, input_grad=True).breakdown()
        total = sum(comps.values()) or 1
        head = _head_dim(self.cm)
        return Plan(
            budget,
            0,
            chosen.options,
            "n/a",
            chosen,
            plain,
            self.shape,
            comps,
            comps.get("temporal_attention", 0) / total,
            self.cm.attention.name(head, _dtype(self.cm)) if head else "n/a",
            reasons,
            {},
            self.cm.calibration.as_dict(),
            self.cm.processes,
            self.cm.sharding,
            work,
        )

    # ---------------------------------------------------------------- search

    def candidates(
        self, modes: tuple[str, ...] = ("none", "block", "call"), chunked: bool = True, chunk: int | None = None
    ) -> list[MemoryOptions]:
        """Settings to search: each mode, unchunked and with chunks of rows/2, rows/4, ... 1
        (or only ``chunk``)."""
        rows = self.rows()
        frames = self.shape.frames
        ladder: list[int | None] = [None]
        if chunk is not None:
            ladder = [min(chunk, rows)]
        elif chunked:
            k = rows // 2
            while k >= 1:
                ladder.append(k)
                k //= 2
        out = []
        for mode in modes:
            for chunk in ladder:
                if chunk is not None and mode == "none":
                    continue  # a chunk implies units: that is "block"
                decode = None if chunk is None else max(1, chunk * frames // rows)
                reward = None if chunk is None else self.shape.batch * decode
                out.append(MemoryOptions(mode, chunk, decode, reward))
        return out

    def best(self, budget: int, options: list[MemoryOptions], zo: str) -> Estimate | None:
        """The largest feasible h over ``options``, then the fewest forwards, then the fewest chunks."""
        best: Estimate | None = None
        for opt in options:
            h = self._max_h(budget, opt, zo)
            if h < 1:
                continue
            est = self.estimate(h, opt, zo)
            key = (-h, est.forwards, opt.frame_chunk is not None, -(opt.frame_chunk or 0), est.total)
            if best is None or key < (
                -best.h,
                best.forwards,
                best.options.frame_chunk is not None,
                -(best.options.frame_chunk or 0),
                best.total,
            ):
                best = est
        return best

    def _max_h(self, budget: int, options: MemoryOptions, zo: str) -> int:
        cap = self.max_h
        if self.variance_ratio is not None and 0 <= self.variance_ratio < 1:
            cap = min(cap, math.floor(self.steps / (2 * (1 - self.variance_ratio)) - 1))
        lo, hi = 0, max(cap, 0)
        if hi < 1 or self.estimate(1, options, zo).total > budget:
            return 0
        lo = 1
        while lo < hi:  # the peak is nondecreasing in h
            mid = (lo + hi + 1) // 2
            if self.estimate(mid, options, zo).total <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def plan(
        self,
        budget: int | str,
        modes: tuple[str, ...] = ("none", "block", "call"),
        chunked: bool = True,
        chunk: int | None = None,
    ) -> Plan:
        """The setting for ``budget`` (bytes or a size string); ``BudgetTooSmall`` if none fits.
        ``modes`` / ``chunk`` restrict the search (a user's fixed choices)."""
        budget = parse_budget(budget, self.cm.device)
        load = self.cm.fixed().load
        if load > budget:
            raise BudgetTooSmall(
                f"memory budget {gib(budget)} is too small to load the model: every process holds its "
                f"{gib(load)} of weights whole before the denoiser is sharded",
                load,
                {},
            )
        options = self.candidates(modes, chunked, chunk)
        self._searched = options
        order = [self.zo] + [z for z in ("latent_lr", "param_es") if z != self.zo and self.zo != "none"]
        chosen, zo = None, self.zo
        for z in order:
            chosen = self.best(budget, options, z)
            if chosen is not None:
                zo = z
                break
        if chosen is None:
            raise self._too_small(budget, options)
        return self._explain(budget, chosen, zo)

    def _explain(self, budget: int, chosen: Estimate, zo: str) -> Plan:
        cm, opt, h = self.cm, chosen.options, chosen.h
        plain = MemoryOptions()
        baseline = self.estimate(h, plain, zo)
        call = cm.call(self.shape, input_grad=True)
        comps = call.breakdown()
        total = sum(comps.values()) or 1
        reasons = []
        h_plain = self._max_h(budget, plain, zo)
        if h == self.max_h:
            reasons.append(f"the largest allowed (max_h = {self.max_h}); peak {gib(chosen.total)}")
        else:
            nxt = self.estimate(h + 1, opt, zo)
            reasons.append(f"h = {h + 1} would need {gib(nxt.total)} ({nxt.bottleneck} phase)")
        if len({o.checkpoint for o in self._searched}) == 1:
            reasons.append(f"as configured ({opt.checkpoint})")
        elif opt.checkpoint == "none":
            reasons.append("everything fits without recomputation")
        elif opt.checkpoint == "call":
            reasons.append(f"without it h <= {h_plain}" if h_plain < h else "each replayed call keeps only its latent")
        else:
            reasons.append(f"keeps only module inputs; without checkpointing h <= {h_plain}")
        if opt.frame_chunk:
            unchunked = self.estimate(h, opt.replace(frame_chunk=None, decode_chunk=None, reward_chunk=None), zo)
            reasons.append(f"{self.rows()} rows in chunks of {opt.frame_chunk}: unchunked needs {gib(unchunked.total)}")
        else:
            reasons.append("frame-local work fits unchunked")
        if opt.checkpoint == "none" and opt.decoder_chunk is None:
            reasons.append("decoder unchunked")
        elif decoder_steps_checkpointed(self.cm.backbone):
            reasons.append("causal VAE: one video's decoder step per checkpoint")
        elif opt.decoder_chunk and decoder_is_frame_local(self.cm.backbone):
            reasons.append(f"the decoder runs {opt.decoder_chunk} frame(s) per checkpoint")
        else:
            reasons.append("decoder checkpointed whole")
        if zo == self.zo:
            reasons.append(f"as configured ({zo}); its phase peaks at {gib(chosen.phases['zo'])}")
        else:
            reasons.append(f"{self.zo} does not fit; {zo} does")
        eq8 = self.eq8_terms(budget)
        share = (comps.get("temporal_attention", 0)) / total
        head = _head_dim(cm)
        attention = cm.attention.name(head, _dtype(cm)) if head else "n/a"
        return Plan(
            budget,
            h,
            opt,
            zo,
            chosen,
            baseline,
            self.shape,
            comps,
            share,
            attention,
            reasons,
            eq8,
            cm.calibration.as_dict(),
            cm.processes,
            cm.sharding,
        )

    def eq8_terms(self, budget: int) -> dict[str, float]:
        """Eq. 8's terms for this model without checkpointing: B_h (an HO step held for
        backprop: one call's activations plus its stored step), B_z (a stored step: latent and
        noise), the overhead Eq. 8 does not count (weights, LoRA, AdamW, gradient buffers, the
        backward's scratch), and its h* for ``budget`` (at most ``max_h``). The terms come from
        the HO phase alone, whose peak is overhead + B_z (T - 1) + h (B_h - B_z): while it is
        the peak of the update, h* is what ``plan`` finds with checkpointing off; when another
        phase (FO, the rollout) is, h* is larger than what fits."""
        plain = MemoryOptions()
        one, two = self.estimate(1, plain), self.estimate(2, plain)
        b_z = 2 * self.cm.latent_bytes(self.shape)
        step = two.phases["ho"] - one.phases["ho"]  # B_h - B_z: one more call held for backprop
        b_h = b_z + step
        overhead = one.fixed + one.persistent + one.phases["ho"] - step - b_z * (self.steps - 1)
        h = eq8_h(budget - overhead, b_h, b_z, self.steps) if step > 0 else self.max_h
        return {"B_h": b_h, "B_z": b_z, "T": self.steps, "overhead": overhead, "h": min(h, self.max_h)}

    def _too_small(self, budget: int, options: list[MemoryOptions]) -> BudgetTooSmall:
        smallest = min(self.estimate(1, o, z).total for o in options for z in ("latent_lr", "param_es"))
        knobs: dict[str, int] = {}
        s = self.shape
        halved = self.cm.family.layout.halve_frames(s.frames)
        tries = {
            f"frames {s.frames} -> {halved}": s.replace(frames=halved),
            f"resolution {s.height}x{s.width} -> {s.height // 2}x{s.width // 2}": s.replace(
                height=s.height // 2, width=s.width // 2
            ),
        }
        if s.batch > 1:
            tries[f"batch {s.batch} -> {s.batch // 2}"] = s.replace(batch=s.batch // 2)
        for name, shape in tries.items():
            try:
                sub = Planner(self.cm, shape.batch, self.fo_steps, self.zo, self.zo_samples, self.max_h, None, shape)
                knobs[name] = smallest - min(sub.estimate(1, o, "param_es").total for o in sub.candidates())
            except (ValueError, ZeroDivisionError):
                continue
        # Frame chunks are not a knob left to turn: the smallest plan already uses them, so
        # their saving is reported as part of it (it is measured from a larger, unchunked plan).
        unchunked = min(self.estimate(1, o, "param_es").total for o in options if o.frame_chunk is None)
        without = f"{gib(unchunked)} without frame chunks; " if unchunked > smallest else ""
        fixed = self.cm.fixed().total
        best = max(knobs, key=knobs.get) if knobs else None
        lines = [
            f"memory budget {gib(budget)} is too small for even h = 1: the smallest plan needs {gib(smallest)} "
            f"({without}weights, LoRA and AdamW state alone {gib(fixed)})."
        ]
        if best is not None:
            lines.append(f"The knob that frees the most: {best} saves {gib(knobs[best])}.")
            others = ", ".join(f"{k}: {gib(v)}" for k, v in knobs.items() if k != best)
            if others:
                lines.append(f"Others: {others}.")
        return BudgetTooSmall(" ".join(lines), smallest, knobs)


def _head_dim(cm: CostModel) -> int | None:
    model = getattr(cm.backbone, "denoiser", None)
    for m in getattr(model, "modules", lambda: [])():
        heads = getattr(m, "heads", None)
        inner = getattr(getattr(m, "to_q", None), "out_features", None)
        if heads and inner:
            return inner // heads
    return None


def _dtype(cm: CostModel) -> torch.dtype:
    model = getattr(cm.backbone, "denoiser", None)
    return next(model.parameters()).dtype if model is not None else torch.float32
