"""Saved activations of one traced call, by component and checkpoint unit.

A call runs once on the *meta* device (shapes and dtypes propagate, nothing is computed or
allocated) with ``torch.autograd.graph.saved_tensors_hooks`` recording every tensor autograd
keeps for the backward pass: its bytes, the module it was saved in and the checkpoint unit
around it (``recompute.classify_units``, given by the caller). Attention is added by formula
(``attention.attention_saved_bytes``).

Every saved byte is attributed to a component: ``conv`` (resnets, convolutions, down/up
samplers), ``temporal_conv`` (UNet3D's temporal convolutions), ``spatial_attention``
(per-frame transformers, their projections and norms), ``temporal_attention`` (temporal
transformers and AnimateDiff motion modules; the 3D attention of CogVideoX / Wan, which
spans all frames, counts here too), ``feed_forward`` and ``other``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlr_video.memory.attention import AttentionBackend, attention_saved_bytes, attention_scores_bytes

COMPONENTS = ("conv", "temporal_conv", "spatial_attention", "temporal_attention", "feed_forward", "other")
_MODULE_COMPONENT = {
    "FeedForward": "feed_forward",
    "TemporalConvLayer": "temporal_conv",
    "TransformerTemporalModel": "temporal_attention",
    "AnimateDiffTransformer3D": "temporal_attention",
    "Transformer2DModel": "spatial_attention",
    "ResnetBlock2D": "conv",
    "Downsample2D": "conv",
    "Upsample2D": "conv",
    "Conv2d": "conv",
    "Conv3d": "conv",
}
_KEEP_PARENT = ("temporal_conv", "spatial_attention", "temporal_attention", "feed_forward")


class _AttentionStub(torch.autograd.Function):
    """The attention output's shape, computing and saving nothing (memory is added by formula)."""

    @staticmethod
    def forward(ctx, q, k, v):
        ctx.shapes = (q.shape, k.shape, v.shape)
        return q.new_empty((*q.shape[:-1], v.shape[-1]))

    @staticmethod
    def backward(ctx, grad):
        q, k, v = ctx.shapes
        return grad.new_empty(q), grad.new_empty(k), grad.new_empty(v)


@dataclass
class UnitCost:
    name: str
    kind: str  # frame | token | whole
    internal: int  # bytes saved inside the unit that are not unit inputs
    rows: int  # length of the chunked axis
    largest: int  # largest single saved tensor inside
    scores: int  # largest materialised score tensor inside
    before: int = 0  # unit-mode kept bytes created up to this unit's entry (alive at its backward)
    io: int = 0  # bytes of its main input (its output's gradient is as large, and never chunked)


@dataclass
class Trace:
    """Saved-activation bytes of one traced function, by component and checkpoint unit."""

    saved: int = 0
    components: dict[str, int] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)  # materialised score bytes (in ``components``)
    units: list[UnitCost] = field(default_factory=list)
    kept_units: int = 0  # bytes alive with units on: unit inputs + saved outside units
    largest: int = 0  # largest saved tensor outside units / at unit boundaries
    largest_any: int = 0  # largest saved tensor anywhere
    largest_scores: int = 0
    forward_peak: int = 0  # live bytes peak of the same call without gradients
    output: int = 0
    # A denoiser call with diffusers' gradient checkpointing on: its trace with the checkpointed
    # blocks as the units (``CallCost`` uses it while the planner's units are off).
    builtin: Trace | None = None

    def scaled(self, factor: float) -> Trace:
        """Every byte count times ``factor`` (per-frame traces scaled to a frame count)."""
        out = copy.deepcopy(self)
        for name in ("saved", "kept_units", "largest", "largest_any", "largest_scores", "forward_peak", "output"):
            setattr(out, name, int(getattr(self, name) * factor))
        out.components = {k: int(v * factor) for k, v in self.components.items()}
        out.scores = {k: int(v * factor) for k, v in self.scores.items()}
        out.builtin = self.builtin.scaled(factor) if self.builtin else None
        return out


class _Tracer:
    def __init__(
        self,
        model: nn.Module | None,
        backend: AttentionBackend,
        transformer: bool,
        label: str | None,
        units: list[tuple[str, nn.Module, str]] | None = None,
    ):
        self.backend, self.transformer, self.label = backend, transformer, label
        self.saved: dict[int, tuple[int, str | None, str, Tensor]] = {}
        self.virtual: list[tuple[int, str | None, str, int]] = []
        self.unit_inputs: dict[str, dict[int, tuple[int, Tensor]]] = {}
        self.unit_rows: dict[str, tuple[str, int]] = {}
        self.unit_io: dict[str, int] = {}
        self.comp: list[str] = [label or "other"]
        self.largest_mask = 0  # the largest attention mask a fused kernel keeps (see ``attention``)
        self.seq = 0
        self.first_seen: dict[int, int] = {}
        self.unit_entry: dict[str, int] = {}
        self.unit: list[str | None] = [None]
        self.exclude: set[int] = set()
        self.handles: list[Any] = []
        if model is not None:
            self.exclude = {_key(t) for t in [*model.parameters(), *model.buffers()]}
            units = {id(m): (n, k) for n, m, k in (units or [])}
            for module in model.modules():
                self.handles.append(module.register_forward_pre_hook(self._enter(module, units), with_kwargs=True))
                self.handles.append(module.register_forward_hook(self._leave(module, units), always_call=True))

    def _enter(self, module: nn.Module, units: dict[int, tuple[str, str]]):
        unit = units.get(id(module))

        def hook(mod, args, kwargs):
            parent = self.comp[-1]
            comp = parent if self.label else _component(mod, parent, self.transformer)
            self.comp.append(comp)
            if unit is not None:
                name, kind = unit
                self.unit.append(name)
                tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
                inputs = self.unit_inputs.setdefault(name, {})
                for t in tensors:
                    if _key(t) not in self.exclude:
                        inputs[_key(t)] = (_nbytes(t), t)
                        self._see(_key(t))
                self.seq += 1
                self.unit_entry.setdefault(name, self.seq)
                first = tensors[0] if tensors else None
                if first is not None:
                    self.unit_io.setdefault(name, _nbytes(first))
                    axis = 1 if kind == "token" else 0
                    self.unit_rows[name] = (kind, first.shape[axis] if first.dim() > axis else 1)
            return None

        return hook

    def _leave(self, module: nn.Module, units: dict[int, tuple[str, str]]):
        is_unit = id(module) in units

        def hook(mod, args, output):
            self.comp.pop()
            if is_unit:
                self.unit.pop()
            return None

        return hook

    def _see(self, key: int) -> None:
        if key not in self.first_seen:
            self.seq += 1
            self.first_seen[key] = self.seq

    def pack(self, t: Tensor) -> Tensor:
        key = _key(t)
        if key not in self.exclude and key not in self.saved:
            self.saved[key] = (_nbytes(t), self.unit[-1], self.comp[-1], t)
            self._see(key)
        return t

    def attention(
        self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, attn_mask: Tensor | None = None
    ) -> None:
        if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
            return
        batch = math.prod(q.shape[:-3]) if q.dim() > 3 else 1
        heads, q_len, d = q.shape[-3], q.shape[-2], q.shape[-1]
        kv_len, dv = k.shape[-2], v.shape[-1]
        materialized = self.backend.materializes(d, q.dtype)
        item = q.element_size()
        nbytes = attention_saved_bytes(batch, heads, q_len, kv_len, d, dv, item, materialized)
        scores = attention_scores_bytes(batch, heads, q_len, kv_len, item) if materialized else 0
        if dropout_p > 0:
            nbytes += attention_scores_bytes(batch, heads, q_len, kv_len, 1)
        if attn_mask is not None and not materialized:
            # A fused kernel keeps the mask for its backward pass, a boolean one converted to the
            # queries' dtype first (torch's SDPA does): as large as the mask as given, e.g.
            # HunyuanVideo 1.5's (B, 1, N, N) joint mask. A float bias, often shared by every
            # block, counts once per storage. The math kernel keeps the masked scores instead
            # (counted above).
            if attn_mask.dtype == torch.bool:
                # Counted as saved, but it is no activation with a gradient: it adds no gradient
                # buffers to a recomputed unit, only (``largest_any``) the transient masks a call
                # recomputed whole builds again next to its saved activations.
                mask = attn_mask.numel() * item
                nbytes += mask
                self.largest_mask = max(self.largest_mask, mask)
            else:
                self.pack(attn_mask)
        self.virtual.append((nbytes, self.unit[-1], self.comp[-1], scores))

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def result(self) -> Trace:
        tr = Trace()
        boundary: dict[int, int] = {}
        for inputs in self.unit_inputs.values():
            for key, (nbytes, _) in inputs.items():
                boundary[key] = nbytes
        internal: dict[str, list[int]] = {}  # unit -> [bytes, largest, scores]
        kept = dict(boundary)
        for key, (nbytes, unit, comp, _) in self.saved.items():
            tr.saved += nbytes
            tr.components[comp] = tr.components.get(comp, 0) + nbytes
            tr.largest_any = max(tr.largest_any, nbytes)
            if unit is None or key in boundary:
                kept[key] = nbytes
            else:
                acc = internal.setdefault(unit, [0, 0, 0])
                acc[0] += nbytes
                acc[1] = max(acc[1], nbytes)
        for nbytes, unit, comp, scores in self.virtual:
            tr.saved += nbytes
            tr.components[comp] = tr.components.get(comp, 0) + nbytes
            if scores:
                tr.scores[comp] = tr.scores.get(comp, 0) + scores
                tr.largest_scores = max(tr.largest_scores, scores)
            if unit is None:
                tr.kept_units += nbytes
            else:
                acc = internal.setdefault(unit, [0, 0, 0])
                acc[0] += nbytes
                acc[2] = max(acc[2], scores)
        tr.largest_any = max(tr.largest_any, self.largest_mask)
        tr.kept_units += sum(kept.values())
        tr.largest = max(kept.values(), default=0)
        order = sorted(kept, key=lambda k: self.first_seen.get(k, 0))
        for name, (kind, rows) in self.unit_rows.items():
            b, largest, scores = internal.get(name, [0, 0, 0])
            entry = self.unit_entry.get(name, 0)
            before = sum(kept[k] for k in order if self.first_seen.get(k, 0) <= entry)
            tr.units.append(UnitCost(name, kind, b, rows, largest, scores, before, self.unit_io.get(name, 0)))
        return tr


def _key(t: Tensor) -> int:
    return t.untyped_storage()._cdata


def _nbytes(t: Tensor) -> int:
    return t.untyped_storage().nbytes()


def _component(module: nn.Module, parent: str, transformer: bool) -> str:
    name = type(module).__name__
    comp = _MODULE_COMPONENT.get(name)
    if comp is not None:
        return parent if (comp == "conv" and parent in _KEEP_PARENT) or parent == "feed_forward" else comp
    if name.endswith("Attention"):
        if parent in ("spatial_attention", "temporal_attention"):
            return parent
        return "temporal_attention" if transformer else "spatial_attention"
    return parent


@contextlib.contextmanager
def _patched_sdpa(tracer: _Tracer) -> Iterator[None]:
    original = F.scaled_dot_product_attention

    def stub(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        tracer.attention(query, key, value, dropout_p, attn_mask)
        return _AttentionStub.apply(query, key, value)

    F.scaled_dot_product_attention = stub
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def trace(
    fn: Callable[[], Any],
    model: nn.Module | None,
    backend: AttentionBackend,
    transformer: bool = False,
    label: str | None = None,
    forward_peak: bool = False,
    units: list[tuple[str, nn.Module, str]] | None = None,
) -> Trace:
    """Saved-activation bytes of ``fn()`` (run on meta tensors), attributed to components
    (or all to ``label``) and to the checkpoint units of ``model`` (``units``, default
    none by default)."""
    from rlr_video.memory.probe import TensorMemoryTracker

    tracer = _Tracer(model, backend, transformer, label, units)
    try:
        with _patched_sdpa(tracer), torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(tracer.pack, _same):
            out = fn()
        result = tracer.result()
        result.output = sum(_nbytes(t) for t in _tensors(out))
    finally:
        tracer.close()
    if forward_peak:
        tracker = TensorMemoryTracker()
        score_peak = [0]
        no_grad = _Tracer(None, backend, transformer, label)

        def attention(q, k, v, dropout_p=0.0, attn_mask=None):
            item = q.element_size()
            if backend.materializes(q.shape[-1], q.dtype):
                batch = math.prod(q.shape[:-3]) if q.dim() > 3 else 1
                score_peak[0] = max(
                    score_peak[0], 2 * attention_scores_bytes(batch, q.shape[-3], q.shape[-2], k.shape[-2], item)
                )
            elif attn_mask is not None and attn_mask.dtype == torch.bool:
                # a fused kernel converts a boolean mask to the queries' dtype first (torch's SDPA
                # does), a transient as large as the mask (HunyuanVideo 1.5's (B, 1, N, N) one)
                score_peak[0] = max(score_peak[0], attn_mask.numel() * item)

        no_grad.attention = attention  # type: ignore[method-assign]
        with _patched_sdpa(no_grad), torch.no_grad(), tracker:
            fn()
        result.forward_peak = tracker.peak + score_peak[0]
    return result


def _same(t: Tensor) -> Tensor:
    return t


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []
