"""What a traced call, a decoder or a reward costs under each checkpointing mode, and the
fixed bytes (weights, trainable parameters, gradients, AdamW state).

From a call's trace follows its memory under each mode (``CallCost``): units keep only
their inputs, a chunked unit's insides shrink by chunk/rows, a checkpointed call keeps
nothing. On top of saved activations a backward pass needs a few gradient buffers at once:
``transient`` times the largest live activation (plus the score gradients when scores are
materialised). The probe (``probe.py``) measures real peaks and calibrates one scale per
component (``Calibration``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlr_video.memory.recompute import MemoryOptions, chunks
from rlr_video.memory.trace import Trace, UnitCost

TRANSIENT = 0.5  # gradient buffers at the start of a backward pass, x the largest saved activation
RECOMPUTE = 2.0  # gradient buffers inside a recomputed unit's backward, x its largest activation
GRAD_IO = 1.0  # a unit's output gradient (full size even when chunked), x its input size
SCORE_GRADS = 1.0  # materialised attention: dS, in units of the largest score tensor


@dataclass
class Calibration:
    """Measured / predicted ratios per component (1: uncalibrated)."""

    denoiser: float = 1.0
    decoder: float = 1.0
    reward: float = 1.0
    transient: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class CallCost:
    """One denoiser call's activation memory, derived from its trace."""

    trace: Trace
    scale: float = 1.0
    transient: float = TRANSIENT
    tokens_per_frame: int | None = None  # transformers: tokens of one latent frame

    def held(self, options: MemoryOptions, in_chain: bool = True) -> int:
        """Bytes the call keeps from its forward to its backward pass."""
        if options.calls and in_chain:
            return 0
        if options.units:
            return int(self.trace.kept_units * self.scale)
        builtin = self.trace.builtin
        return int((builtin.kept_units if builtin else self.trace.saved) * self.scale)

    def peak(self, options: MemoryOptions, in_chain: bool = False) -> int:
        """The call's peak while its backward runs, counting what it holds itself.

        Without units: everything saved plus the first gradient buffers, or with diffusers'
        gradient checkpointing on, its blocks as the units. With units, unit i is recomputed
        while only the kept bytes created before it are alive (the backward runs in reverse),
        so the peak is max_i(kept before i + i's insides per chunk + buffers). In a chain with
        call checkpointing the call is recomputed whole under the inner mode.
        """
        tr = self.trace
        if options.calls and in_chain:
            return self.peak(options.replace(checkpoint="block" if options.units else "none"), False)
        if not options.units:
            if tr.builtin is not None:
                return self._units_peak(tr.builtin, options)
            return int(self.scale * (tr.saved + self.transient * tr.largest_any + SCORE_GRADS * tr.largest_scores))
        return self._units_peak(tr, options)

    def _units_peak(self, tr: Trace, options: MemoryOptions) -> int:
        worst = tr.kept_units + self.transient * tr.largest
        for u in tr.units:
            part = 1.0 / self._chunks(u, options)
            buffers = RECOMPUTE * self.transient / TRANSIENT * u.largest
            inside = (u.internal + SCORE_GRADS * u.scores + buffers) * part
            worst = max(worst, u.before + inside + GRAD_IO * u.io)
        return int(self.scale * worst)

    def _chunks(self, unit: UnitCost, options: MemoryOptions) -> int:
        if unit.kind == "frame":
            return chunks(unit.rows, options.frame_chunk)
        if unit.kind == "token" and options.frame_chunk and self.tokens_per_frame:
            return chunks(unit.rows, options.frame_chunk * self.tokens_per_frame)
        return 1

    def backward_extra(self, options: MemoryOptions, in_chain: bool = True) -> int:
        """Bytes on top of what the call holds while its backward runs."""
        return max(0, self.peak(options, in_chain) - self.held(options, in_chain))

    def breakdown(self) -> dict[str, int]:
        return {k: int(v * self.scale) for k, v in self.trace.components.items()}


@dataclass
class SegmentCost:
    """A decoder or reward: what it keeps, and what its backward adds.

    ``length`` is the axis its chunks split: frames per video for a decoder (``decode_chunk``
    counts frames), images B*F for a reward (``reward_chunk`` counts images)."""

    saved: int  # plain: every activation kept
    kept_chunked: int  # checkpointed: its input and output only
    length: int
    largest: int
    frame_local: bool
    scale: float = 1.0
    transient: float = TRANSIENT
    # A causal decoder checkpointed step by step: the caches kept between its checkpoints, and
    # the largest share of ``saved`` one checkpoint recomputes (``causal_vae.decode_profile``).
    carried: int = 0
    step_share: float | None = None

    def held(self, chunk: int | None, checkpointed: bool) -> int:
        return int(self.scale * (self.kept_chunked + self.carried if checkpointed else self.saved))

    def backward_extra(self, chunk: int | None, checkpointed: bool) -> int:
        if not checkpointed:
            return int(self.scale * self.transient * self.largest)
        if self.step_share is not None:
            return int(self.scale * (self.saved * self.step_share + self.transient * self.largest))
        n = chunks(self.length, chunk) if self.frame_local else 1
        return int(self.scale * (self.saved + self.transient * self.largest) / n)


@dataclass
class FixedCost:
    weights: int = 0
    trainable: int = 0  # LoRA (or trainable) parameters, float32
    gradients: int = 0  # p.grad plus the estimator's per-part buffers
    optimizer: int = 0  # AdamW: two moments
    details: dict[str, int] = field(default_factory=dict)
    load: int = 0  # with sharding: weights one process holds whole while loading, before sharding

    @property
    def total(self) -> int:
        return self.weights + self.trainable + self.optimizer
