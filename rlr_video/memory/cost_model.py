"""Predicted activation memory of one denoiser call, the decoder and the reward.

How the prediction is made. A denoiser call is traced once on the *meta* device (shapes
and dtypes propagate, nothing is computed or allocated) at the video shape asked for, with
``torch.autograd.graph.saved_tensors_hooks`` recording every tensor autograd keeps for the
backward pass: its bytes, the module it was saved in and the checkpoint unit around it
(``checkpointing.classify_units``). Attention is the one term the trace cannot see, because
its memory depends on the kernel: the trace replaces ``scaled_dot_product_attention`` and
adds a closed form (``attention_saved_bytes``),

- scores materialised (PyTorch's math kernel, diffusers' classic processor):
  batch * heads * L * S for the softmax output, plus q, k and v;
  for spatial attention L = S = N = h*w tokens per frame and batch = B*F, so B*F*heads*N^2;
  for temporal attention L = S = F frames and batch = B*N, so B*N*heads*F^2;
- memory-efficient kernels (flash / efficient SDPA on CUDA, flash on CPU, cuDNN, xformers):
  q, k, v, the output and a float32 log-sum-exp per query row: linear in L and S;

using the kernel ``torch._fused_sdp_choice`` picks on the device the model runs on.

Every saved byte is attributed to a component: ``conv`` (resnets, convolutions, down/up
samplers), ``temporal_conv`` (UNet3D's temporal convolutions), ``spatial_attention``
(per-frame transformers, their projections and norms), ``temporal_attention`` (temporal
transformers and AnimateDiff motion modules; the 3D attention of CogVideoX / Wan, which
spans all frames, counts here too), ``feed_forward`` and ``other``. From the same trace the
memory under each checkpointing mode follows (``CallCost``): units keep only their inputs,
a chunked unit's insides shrink by chunk/rows, a checkpointed call keeps nothing.

On top of saved activations a backward pass needs a few gradient buffers at once: the model
adds ``transient`` times the largest live activation (plus the score gradients when scores
are materialised). Fixed costs (weights, LoRA, gradients, AdamW state, the stored
trajectory) are counted from parameter sizes. The probe (``probe.py``) measures real peaks
and calibrates one scale per component (``Calibration``).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlr_video.memory.checkpointing import MemoryOptions, chunks, classify_units, decoder_is_frame_local, unwrap
from rlr_video.memory.meta import META, is_meta, meta_twin

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
TRANSIENT = 0.5  # gradient buffers at the start of a backward pass, x the largest saved activation
RECOMPUTE = 2.0  # gradient buffers inside a recomputed unit's backward, x its largest activation
GRAD_IO = 1.0  # a unit's output gradient (full size even when chunked), x its input size
SCORE_GRADS = 1.0  # materialised attention: dS, in units of the largest score tensor


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class VideoShape:
    """A micro-batch of videos: ``batch`` videos of ``frames`` frames, ``height`` x ``width``
    pixels (what the decoder returns and the reward sees)."""

    batch: int
    frames: int
    height: int
    width: int

    def replace(self, **changes: int) -> VideoShape:
        return VideoShape(**{**self.__dict__, **changes})


# --------------------------------------------------------------------------- attention


def attention_saved_bytes(
    batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, v_dim: int, itemsize: int, materialized: bool
) -> int:
    """Bytes one attention call keeps for its backward pass (``batch`` = every leading dim)."""
    qkv = batch * heads * (q_len * head_dim + kv_len * head_dim + kv_len * v_dim) * itemsize
    if materialized:  # scaled q, scaled k, v, softmax(q k^T)
        return qkv + batch * heads * q_len * kv_len * itemsize
    return qkv + batch * heads * q_len * v_dim * itemsize + batch * heads * q_len * 4  # output, fp32 LSE


def attention_scores_bytes(batch: int, heads: int, q_len: int, kv_len: int, itemsize: int) -> int:
    return batch * heads * q_len * kv_len * itemsize


_BACKENDS = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def sdpa_backend(device: torch.device | str, dtype: torch.dtype, head_dim: int) -> str:
    """The kernel ``F.scaled_dot_product_attention`` picks for a training call on ``device``
    (``"math"`` materialises the scores). Without that device here: CUDA is assumed to pick
    a memory-efficient kernel (true for fp16/bf16/fp32 with head_dim <= 256)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return "flash" if head_dim <= 256 else "math"
    if device.type == "meta":
        device = torch.device("cpu")
    try:
        q = torch.zeros(1, 2, 8, head_dim, device=device, dtype=dtype, requires_grad=True)
        return _BACKENDS.get(int(torch._fused_sdp_choice(q, q, q)), "math")
    except Exception:  # noqa: BLE001 - an unsupported dtype or device: the math kernel
        return "math"


def processors_backend(model: nn.Module) -> str | None:
    """``"xformers"`` or ``"classic"`` when the model's attention processors say so, else
    None (the processors call SDPA)."""
    names = {type(getattr(m, "processor", None)).__name__ for m in model.modules() if hasattr(m, "processor")}
    if any("XFormers" in n for n in names):
        return "xformers"
    if names & {"AttnProcessor", "AttnAddedKVProcessor"}:
        return "classic"
    return None


class AttentionBackend:
    """Whether attention materialises its scores, per head size and dtype (cached)."""

    def __init__(self, device: torch.device | str, override: str | None = None):
        self.device, self.override = torch.device(device), override
        self._cache: dict[tuple[int, torch.dtype], str] = {}

    def name(self, head_dim: int, dtype: torch.dtype) -> str:
        if self.override == "xformers":
            return "xformers"
        if self.override == "classic":
            return "math"
        if self.override in ("math", "flash", "efficient", "cudnn"):
            return self.override
        key = (head_dim, dtype)
        if key not in self._cache:
            self._cache[key] = sdpa_backend(self.device, dtype, head_dim)
        return self._cache[key]

    def materializes(self, head_dim: int, dtype: torch.dtype) -> bool:
        return self.name(head_dim, dtype) == "math"


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


# --------------------------------------------------------------------------- tracing


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

    def scaled(self, factor: float) -> Trace:
        """Every byte count times ``factor`` (per-frame traces scaled to a frame count)."""
        out = copy.deepcopy(self)
        for name in ("saved", "kept_units", "largest", "largest_any", "largest_scores", "forward_peak", "output"):
            setattr(out, name, int(getattr(self, name) * factor))
        out.components = {k: int(v * factor) for k, v in self.components.items()}
        out.scores = {k: int(v * factor) for k, v in self.scores.items()}
        return out


class _Tracer:
    def __init__(self, model: nn.Module | None, backend: AttentionBackend, transformer: bool, label: str | None):
        self.backend, self.transformer, self.label = backend, transformer, label
        self.saved: dict[int, tuple[int, str | None, str, Tensor]] = {}
        self.virtual: list[tuple[int, str | None, str, int]] = []
        self.unit_inputs: dict[str, dict[int, tuple[int, Tensor]]] = {}
        self.unit_rows: dict[str, tuple[str, int]] = {}
        self.unit_io: dict[str, int] = {}
        self.comp: list[str] = [label or "other"]
        self.seq = 0
        self.first_seen: dict[int, int] = {}
        self.unit_entry: dict[str, int] = {}
        self.unit: list[str | None] = [None]
        self.exclude: set[int] = set()
        self.handles: list[Any] = []
        if model is not None:
            self.exclude = {_key(t) for t in [*model.parameters(), *model.buffers()]}
            units = {id(m): (n, k) for n, m, k in classify_units(model)}
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

    def attention(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> None:
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
        tracer.attention(query, key, value, dropout_p)
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
) -> Trace:
    """Saved-activation bytes of ``fn()`` (run on meta tensors), attributed to components
    (or all to ``label``) and to the checkpoint units of ``model``."""
    from rlr_video.memory.probe import TensorMemoryTracker

    tracer = _Tracer(model, backend, transformer, label)
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

        def attention(q, k, v, dropout_p=0.0):
            if backend.materializes(q.shape[-1], q.dtype):
                batch = math.prod(q.shape[:-3]) if q.dim() > 3 else 1
                item = q.element_size()
                score_peak[0] = max(
                    score_peak[0], 2 * attention_scores_bytes(batch, q.shape[-3], q.shape[-2], k.shape[-2], item)
                )

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


# --------------------------------------------------------------------------- costs


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
        return int((self.trace.kept_units if options.units else self.trace.saved) * self.scale)

    def peak(self, options: MemoryOptions, in_chain: bool = False) -> int:
        """The call's peak while its backward runs, counting what it holds itself.

        Without units: everything saved plus the first gradient buffers. With units, unit i is
        recomputed while only the kept bytes created before it are alive (the backward runs in
        reverse), so the peak is max_i(kept before i + i's insides per chunk + buffers). In a
        chain with call checkpointing the call is recomputed whole under the inner mode.
        """
        tr = self.trace
        if options.calls and in_chain:
            return self.peak(options.replace(checkpoint="block" if options.units else "none"), False)
        if not options.units:
            return int(self.scale * (tr.saved + self.transient * tr.largest_any + SCORE_GRADS * tr.largest_scores))
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

    def held(self, chunk: int | None, checkpointed: bool) -> int:
        return int(self.scale * (self.kept_chunked if checkpointed else self.saved))

    def backward_extra(self, chunk: int | None, checkpointed: bool) -> int:
        if not checkpointed:
            return int(self.scale * self.transient * self.largest)
        n = chunks(self.length, chunk) if self.frame_local else 1
        return int(self.scale * (self.saved + self.transient * self.largest) / n)


@dataclass
class FixedCost:
    weights: int = 0
    trainable: int = 0  # LoRA (or trainable) parameters, float32
    gradients: int = 0  # p.grad plus the estimator's per-part buffers
    optimizer: int = 0  # AdamW: two moments
    details: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.weights + self.trainable + self.optimizer


# --------------------------------------------------------------------------- the model


class CostModel:
    """Predicted memory of one backbone (real or built on the meta device) and reward.

    Args:
        backbone: a ``VideoBackbone``: the diffusers adapters, the toy, or one of the user's
            own (traced if its models can be copied to the meta device).
        reward: the reward callable (optional; traced on meta frames when possible).
        device: where training runs (decides the attention kernel); default the backbone's.
        attention: override the detected attention kernel (``math``, ``flash``, ``xformers`` ...).
        text_length: prompt tokens (default: the backbone's prompt encoder's length).
    """

    def __init__(
        self,
        backbone,
        reward=None,
        device: torch.device | str | None = None,
        attention: str | None = None,
        text_length: int | None = None,
        calibration: Calibration | None = None,
    ):
        self.backbone = unwrap(backbone)
        self.reward = reward
        model = getattr(self.backbone, "denoiser", None)
        real_device = next(model.parameters()).device if isinstance(model, nn.Module) else torch.device("cpu")
        self.device = torch.device(device) if device is not None else real_device
        if self.device.type == "meta":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        override = attention or (processors_backend(model) if isinstance(model, nn.Module) else None)
        self.attention = AttentionBackend(self.device, override)
        self.calibration = calibration or Calibration()
        self.family = getattr(self.backbone, "family", None) or type(self.backbone).__name__
        self.transformer = type(model).__name__ in ("CogVideoXTransformer3DModel", "WanTransformer3DModel")
        # The toy computes with step indices on the latents' device: trace it for real (it is tiny).
        self.trace_device = torch.device("cpu") if type(self.backbone).__name__ == "ToyBackbone" else META
        self.shell = self.backbone if self.trace_device.type == "cpu" else _meta_shell(self.backbone)
        self.text_length = text_length or _text_length(self.backbone)
        self._cache: dict[tuple, Any] = {}

    # ---------------------------------------------------------------- shapes

    @property
    def video_shape(self) -> tuple[int, int, int]:
        b = self.backbone
        if hasattr(b, "num_frames"):
            return b.num_frames, b.height, b.width
        c, f, h, w = b.latent_shape  # the toy: latents are the video
        return f, h, w

    def default_shape(self, batch: int) -> VideoShape:
        f, h, w = self.video_shape
        return VideoShape(batch, f, h, w)

    def latent_shape(self, shape: VideoShape) -> tuple[int, ...]:
        """One video's latents for ``shape`` (the denoiser's layout)."""
        base = tuple(self.backbone.latent_shape)
        f0, h0, w0 = self.video_shape
        if shape.height * h0 == 0 or shape.height * base[-2] % h0 or shape.width * base[-1] % w0:
            raise ValueError(f"{shape.height}x{shape.width} does not tile the latent grid of {h0}x{w0}")
        lh, lw = shape.height * base[-2] // h0, shape.width * base[-1] // w0
        if self.family in ("cogvideox", "wan"):
            lf = (shape.frames - 1) // 4 + 1 if self.family == "wan" else (shape.frames - 1) // 4 + 1
            lf += getattr(self.backbone, "frame_padding", 0)
            return (lf, base[1], lh, lw) if self.family == "cogvideox" else (base[0], lf, lh, lw)
        return (base[0], shape.frames, lh, lw)

    def latent_bytes(self, shape: VideoShape) -> int:
        return shape.batch * math.prod(self.latent_shape(shape)) * 4  # the chain runs in float32

    def frames_bytes(self, shape: VideoShape) -> int:
        return shape.batch * shape.frames * 3 * shape.height * shape.width * 4

    @property
    def guided(self) -> bool:
        return float(getattr(self.backbone, "guidance_scale", 1.0)) > 1.0

    # ---------------------------------------------------------------- denoiser

    def call(self, shape: VideoShape, input_grad: bool = True) -> CallCost:
        """One denoiser call (classifier-free guidance included) with gradients."""
        key = ("call", shape, input_grad)
        if key not in self._cache:
            self._cache[key] = self._trace_call(shape, input_grad)
        return CallCost(
            self._cache[key], self.calibration.denoiser, TRANSIENT * self.calibration.transient, self._tokens(shape)
        )

    def _tokens(self, shape: VideoShape) -> int | None:
        patch = getattr(getattr(getattr(self.backbone, "denoiser", None), "config", None), "patch_size", None)
        if not self.transformer or patch is None:
            return None
        ph, pw = (patch[1], patch[2]) if isinstance(patch, list | tuple) else (patch, patch)
        lat = self.latent_shape(shape)
        return (lat[-2] // ph) * (lat[-1] // pw)

    def _trace_call(self, shape: VideoShape, input_grad: bool) -> Trace:
        shell = self.shell
        latents = torch.zeros((shape.batch, *self.latent_shape(shape)), device=self.trace_device)
        latents.requires_grad_(input_grad)
        cond = _meta_cond(self.backbone, shape.batch, self.text_length, self.trace_device)
        step = max(1, min(self.backbone.num_steps, self.backbone.num_steps // 2))
        model = getattr(shell, "denoiser", None)
        return trace(lambda: shell.predict(latents, step, cond), model, self.attention, self.transformer, None, True)

    # ---------------------------------------------------------------- decoder

    def decoder(self, shape: VideoShape) -> SegmentCost:
        key = ("decode", shape)
        if key not in self._cache:
            self._cache[key] = self._trace_decoder(shape)
        cost = copy.copy(self._cache[key])
        cost.scale, cost.transient = self.calibration.decoder, TRANSIENT * self.calibration.transient
        return cost

    def _trace_decoder(self, shape: VideoShape) -> SegmentCost:
        frame_local = decoder_is_frame_local(self.backbone)
        frames_out = self.frames_bytes(shape)
        traced = shape.replace(batch=1, frames=1) if frame_local else shape
        latents = torch.zeros((traced.batch, *self.latent_shape(traced)), device=self.trace_device, requires_grad=True)
        tr = trace(
            lambda: self.shell.decode(latents), getattr(self.shell, "vae", None), self.attention, False, "decoder"
        )
        if frame_local:
            factor = shape.batch * shape.frames
            return SegmentCost(tr.saved * factor, frames_out, shape.frames, tr.largest_any * shape.batch, True)
        return SegmentCost(tr.saved, frames_out, 1, tr.largest_any, False)

    # ---------------------------------------------------------------- reward

    def reward_cost(self, shape: VideoShape) -> SegmentCost:
        key = ("reward", shape)
        if key not in self._cache:
            self._cache[key] = self._reward_cost(shape)
        cost = copy.copy(self._cache[key])
        cost.scale, cost.transient = self.calibration.reward, TRANSIENT * self.calibration.transient
        return cost

    def _reward_cost(self, shape: VideoShape) -> SegmentCost:
        images = shape.batch * shape.frames
        frames = self.frames_bytes(shape)
        total, largest, chunkable = 0, 0, False
        for r in _leaf_rewards(self.reward):
            saved, _, big, can_chunk = _reward_leaf_cost(r, shape, self.attention)
            total += saved
            largest = max(largest, big)
            chunkable = chunkable or can_chunk
        if self.reward is None:
            total, largest = frames, frames
        return SegmentCost(total, 0, images, largest, chunkable)

    def tail(self, shape: VideoShape, options: MemoryOptions) -> int:
        """Peak of decoding x_0 and scoring it, with the backward down to the latents: first the
        reward's backward (decoder output and reward activations alive), then the decoder's."""
        dec, rew = self.decoder(shape), self.reward_cost(shape)
        dec_ck = options.checkpoint != "none" or options.decoder_chunk is not None
        dchunk, rchunk = options.decoder_chunk, options.reward_images
        rew_ck = rchunk is not None and rew.frame_local
        d_held, r_held = dec.held(dchunk, dec_ck), rew.held(rchunk, rew_ck)
        frames = self.frames_bytes(shape)
        return max(
            d_held + frames + r_held + rew.backward_extra(rchunk, rew_ck),
            d_held + frames + dec.backward_extra(dchunk, dec_ck),
        )

    # ---------------------------------------------------------------- fixed

    def fixed(self, trainable_numel: int | None = None) -> FixedCost:
        """Weights of every model, the trainable parameters, gradients and AdamW state."""
        b = self.backbone
        models = [m for m in (getattr(b, "denoiser", None), getattr(b, "vae", None)) if isinstance(m, nn.Module)]
        text = getattr(getattr(b, "prompt_encoder", None), "text_encoder", None)
        if isinstance(text, nn.Module):
            models.append(text)
        details = {}
        for name, m in zip(("denoiser", "vae", "text_encoder"), models):
            details[name] = sum(p.numel() * p.element_size() for p in m.parameters())
        for r in _leaf_rewards(self.reward):
            params = {id(p): p for m in _reward_modules(r) for p in m.parameters()}.values()
            if params:
                details[f"reward:{getattr(r, 'name', type(r).__name__)}"] = sum(
                    p.numel() * p.element_size() for p in params
                )
        if trainable_numel is None:
            trainable_numel = _trainable_numel(b)
        trainable = trainable_numel * 4
        weights = sum(details.values())
        if not is_meta(b):  # LoRA weights are inside the denoiser's parameters already
            weights -= trainable
        return FixedCost(weights, trainable, 4 * trainable, 2 * trainable, details)


# --------------------------------------------------------------------------- helpers


def _meta_shell(backbone):
    """A shallow copy of ``backbone`` whose models are meta twins (the same object if it is
    already on the meta device). Tracing the shell runs the backbone's own ``predict`` and
    ``decode`` code."""
    shell = copy.copy(backbone)
    if type(backbone).__name__ == "ToyBackbone":
        shell.denoiser = meta_twin(backbone.denoiser)
        shell.decoder_weight = backbone.decoder_weight.to(META)
        _mark_trainable(shell.denoiser, None, backbone)
        return shell
    model = getattr(backbone, "denoiser", None)
    if isinstance(model, nn.Module):
        shell.denoiser = model if is_meta(backbone) else meta_twin(model)
        shell.denoiser.requires_grad_(False)
        targets = getattr(getattr(backbone, "options", None), "lora_targets", None)
        _mark_trainable(shell.denoiser, targets, backbone)
    vae = getattr(backbone, "vae", None)
    if isinstance(vae, nn.Module):
        shell.vae = vae if next(vae.parameters()).device.type == "meta" else meta_twin(vae)
        shell.vae.requires_grad_(False)
    shell.__dict__.pop("decode", None)  # a checkpointing wrapper: trace the plain decode
    shell.__dict__.pop("_rotary_cache", None)
    return shell


def _mark_trainable(model: nn.Module, targets: Sequence[str] | None, backbone) -> None:
    """Gradients to the parameters training touches: LoRA targets' weights stand for their
    LoRA layers (LoRA's first projection saves the same input); the toy's trainable ones."""
    if type(backbone).__name__ == "ToyBackbone":
        names = {n for n, p in backbone.denoiser.named_parameters() if p.requires_grad}
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        return
    targets = tuple(targets or ("to_q", "to_k", "to_v", "to_out.0"))
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            module.weight.requires_grad_(True)


def _meta_cond(backbone, batch: int, text_length: int, device: torch.device = META):
    """Conditioning of ``batch`` prompts on the meta device, as ``encode`` would give."""
    from rlr_video.backbones.text import TextConditioning

    if type(backbone).__name__ == "ToyBackbone":
        return torch.zeros(2 * batch, backbone.denoiser.hidden, device=device)
    model = backbone.denoiser
    cfg = model.config
    dim = next(
        (getattr(cfg, k) for k in ("cross_attention_dim", "text_embed_dim", "text_dim") if getattr(cfg, k, None)), 768
    )
    guided = float(backbone.guidance_scale) > 1.0
    rows = 2 * batch if guided else batch
    embeds = torch.empty(rows, text_length, dim, device=META, dtype=backbone.dtype)
    return TextConditioning(embeds, guided, [""] * batch)


def _text_length(backbone) -> int:
    encoder = getattr(backbone, "prompt_encoder", None)
    return int(getattr(encoder, "max_length", 0) or 77)


def _trainable_numel(backbone) -> int:
    params = backbone.trainable_parameters()
    if params:
        return sum(p.numel() for p in params)
    options = getattr(backbone, "options", None)
    rank = getattr(options, "lora_rank", None) or 0
    if not rank or not isinstance(getattr(backbone, "denoiser", None), nn.Module):
        return 0
    targets = tuple(options.lora_targets)
    return sum(
        rank * (m.in_features + m.out_features)
        for n, m in backbone.denoiser.named_modules()
        if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets)
    )


def _leaf_rewards(reward) -> list[Any]:
    """The rewards inside training wrappers and weighted mixtures."""
    if reward is None:
        return []
    inner = reward.__dict__.get("reward") if hasattr(reward, "__dict__") else None
    if inner is not None:
        return _leaf_rewards(inner)
    terms = getattr(reward, "terms", None)
    if isinstance(terms, dict):
        return [r for v in terms.values() for r in _leaf_rewards(v[1] if isinstance(v, tuple) else v)]
    if isinstance(terms, list | tuple):
        return [r for v in terms for r in _leaf_rewards(v[1] if isinstance(v, tuple) else v)]
    return [reward]


def _reward_modules(reward) -> list[nn.Module]:
    """The models a reward holds: itself if it is one, its attributes that are, and its
    encoder's model. Any reward with a model is costed, never traced: tracing runs it on meta
    frames, and a reward that follows its frames' device would move its (shared) model there."""
    if isinstance(reward, nn.Module):
        return [reward]
    encoder = getattr(reward, "encoder", None)
    found = [getattr(encoder, "model", None), *vars(reward).values()] if hasattr(reward, "__dict__") else []
    return list({id(m): m for m in found if isinstance(m, nn.Module)}.values())  # each once, in order


def _reward_leaf_cost(reward, shape: VideoShape, backend: AttentionBackend) -> tuple[int, float, int, bool]:
    """(saved bytes on all frames, per-image bytes, largest tensor, chunkable) of one reward."""
    images = shape.batch * shape.frames
    chunkable = getattr(reward, "chunkable", hasattr(reward, "chunk_size") and hasattr(reward, "checkpoint"))
    vision = getattr(reward, "vision", None)  # a RewardStub (a reward known by name only)
    if vision is None:
        visual = next((getattr(m, "visual", None) for m in _reward_modules(reward)), None)
        vision = vit_config(visual) if visual is not None else None
    if vision is not None:
        per = vit_image_bytes(
            **vision, materialized=backend.materializes(vision["width"] // vision["heads"], torch.bfloat16)
        )
        tokens, width, item = vision["tokens"], vision["width"], vision["itemsize"]
        return int(per * images), per, 4 * tokens * width * item, chunkable
    if getattr(reward, "pixels", True) and not _reward_modules(reward):  # a pixel reward: trace it
        frames = torch.empty(shape.batch, shape.frames, 3, shape.height, shape.width, device=META, requires_grad=True)
        try:
            tr = trace(lambda: reward(frames, [""] * shape.batch), None, backend, False, "reward")
            return tr.saved, tr.saved / images, tr.largest_any, chunkable
        except Exception:  # noqa: BLE001 - a reward that needs real data: a frames-sized guess
            pass
    n = 2 * images * 3 * shape.height * shape.width * 4
    return n, n / images, n // 2, chunkable


def vit_config(visual: nn.Module) -> dict[str, int]:
    """Width, layers, heads, tokens and dtype size of an open_clip vision transformer."""
    transformer = getattr(visual, "transformer", None)
    width = int(getattr(transformer, "width", 768))
    layers = int(getattr(transformer, "layers", 12))
    block = getattr(transformer, "resblocks", [None])[0]
    heads = int(getattr(getattr(block, "attn", None), "num_heads", max(1, width // 64)))
    size = getattr(visual, "image_size", (224, 224))
    patch = getattr(visual, "patch_size", (16, 16))
    size = size if isinstance(size, tuple | list) else (size, size)
    patch = patch if isinstance(patch, tuple | list) else (patch, patch)
    dtype = next(visual.parameters()).dtype
    return {
        "width": width,
        "layers": layers,
        "heads": heads,
        "tokens": (size[0] // patch[0]) * (size[1] // patch[1]) + 1,
        "itemsize": torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4,
    }


def vit_image_bytes(
    width: int, layers: int, heads: int, tokens: int, itemsize: int, materialized: bool, coefficient: float = 12.0
) -> float:
    """Saved bytes per image of a frozen vision transformer whose input needs a gradient: per
    layer about ``coefficient`` x tokens x width (two layer norms' inputs, q, k, v and the
    attention output, the MLP's 4x-wide GELU input, the head split's copies; frozen linear
    layers keep nothing), plus heads x tokens^2 when the attention scores are materialised."""
    per_layer = coefficient * tokens * width * itemsize
    if materialized:
        per_layer += heads * tokens * tokens * itemsize
    return float(layers * per_layer)


# Rewards known by name: the vision tower of their default model (open_clip configs).
REWARD_TOWERS = {
    "aesthetic": "ViT-L-14",
    "clip": "ViT-B-32",
    "hpsv2": "ViT-H-14",
    "pickscore": "ViT-H-14",
    "temporal": "ViT-B-16",  # DINO ViT-B/16 has the same shape
}


@dataclass
class RewardStub:
    """A reward known only by its config entry (its weights are not loaded): enough to cost it."""

    name: str
    vision: dict[str, int] | None
    chunk_size: int | None = 16
    checkpoint: bool = False
    pixels: bool = True

    @property
    def chunkable(self) -> bool:
        return self.vision is not None


def reward_stubs(spec: str | dict[str, Any], itemsize: int = 4) -> list[RewardStub]:
    """Stubs for a config's reward spec (a name, ``{name: weight}`` or ``{label: {reward: ...}}``)."""
    entries = {spec: {}} if isinstance(spec, str) else dict(spec)
    stubs = []
    for label, value in entries.items():
        options = dict(value) if isinstance(value, dict) else {}
        name = options.get("reward", label)
        tower = options.get("model") or REWARD_TOWERS.get(name)
        if name == "temporal" and options.get("backbone") == "clip":
            tower = options.get("model") or "ViT-B-32"
        vision = _open_clip_tower(tower, itemsize) if tower else None
        stubs.append(RewardStub(name, vision, pixels=vision is None))
    return stubs


def _open_clip_tower(name: str, itemsize: int) -> dict[str, int] | None:
    try:
        import open_clip

        cfg = (open_clip.get_model_config(name) or {}).get("vision_cfg")
    except Exception:  # noqa: BLE001 - open_clip missing, or a transformers model id
        cfg = None
    if not cfg or not isinstance(cfg.get("layers"), int):
        return {"width": 768, "layers": 12, "heads": 12, "tokens": 197, "itemsize": itemsize}
    width, patch, size = cfg["width"], cfg["patch_size"], cfg.get("image_size", 224)
    heads = width // cfg.get("head_width", 64)
    return {
        "width": width,
        "layers": cfg["layers"],
        "heads": heads,
        "tokens": (size // patch) ** 2 + 1,
        "itemsize": itemsize,
    }
