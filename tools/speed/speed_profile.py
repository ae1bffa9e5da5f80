"""Where the time of one update goes: ``torch.profiler`` time by part (denoiser calls, decode,
reward, text encoder, the rest), forward and backward alike.

The backbone's ``_denoise``, ``decode`` and ``encode`` and the reward are wrapped in
``record_function`` scopes while the update runs under the profiler. Forward time is the scopes'
time. Backward time is attributed through autograd's sequence numbers: each backward node's
``autograd::engine::evaluate_function`` event carries the sequence number of the forward op that
made it, and that op sits inside one of the scopes. Scopes nest (a checkpointed call recomputes
its forward inside a backward node), so each part is charged its exclusive time: an event's
duration less that of the categorised events inside it. "rest" is what no part claims: the
chain's arithmetic, noise draws, parameter perturbations, gradient bookkeeping and Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

PARTS = ("denoiser", "decode", "reward", "text_encoder")
PREFIX = "rlr::"
BACKWARD = "autograd::engine::evaluate_function: "


class ScopedReward:
    """A reward called inside a ``record_function`` scope (its name and flags unchanged)."""

    def __init__(self, reward):
        self.reward = reward
        self.name = getattr(reward, "name", type(reward).__name__)
        self.differentiable = getattr(reward, "differentiable", True)

    def __call__(self, frames, prompts):
        with record_function(PREFIX + "reward"):
            return self.reward(frames, prompts)


def _scoped(fn: Callable, part: str) -> Callable:
    def wrapped(*args, **kwargs):
        with record_function(PREFIX + part):
            return fn(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def scoped(backbone) -> Iterator[None]:
    """The backbone's denoiser calls, decoder and text encoder in scopes while inside. The denoiser
    modules' own forward is scoped, whichever method calls them (a family's ``_denoise``, a mixture
    of experts' ``_denoise_at``, HunyuanVideo 1.0's ``predict``)."""
    methods = {"decode": "decode", "encode": "text_encoder"}
    for attr, part in methods.items():
        setattr(backbone, attr, _scoped(getattr(backbone, attr), part))
    for module in backbone.denoisers:
        module.forward = _scoped(module.forward, "denoiser")
    try:
        yield
    finally:
        for attr in methods:
            del backbone.__dict__[attr]  # the class's method again
        for module in backbone.denoisers:
            del module.__dict__["forward"]


def _part_of(event) -> str | None:
    """The innermost scope above a forward op (None: outside every scope)."""
    parent = event
    while parent is not None:
        if parent.name.startswith(PREFIX):
            return parent.name[len(PREFIX) :]
        parent = parent.cpu_parent
    return None


def attribute(events) -> dict[str, float]:
    """Exclusive microseconds per part of a profiler's ``events()``, plus ``total``."""
    by_seq: dict[tuple[int, int], str] = {}
    intervals: list[tuple[float, float, str]] = []
    for e in events:
        if e.name.startswith(PREFIX):
            intervals.append((e.time_range.start, e.time_range.end, e.name[len(PREFIX) :]))
        elif e.sequence_nr >= 0 and not e.name.startswith(BACKWARD):
            part = _part_of(e)
            if part is not None:
                by_seq.setdefault((e.thread, e.sequence_nr), part)
    for e in events:
        if e.name.startswith(BACKWARD) and e.sequence_nr >= 0:
            part = by_seq.get((e.fwd_thread if e.fwd_thread is not None else e.thread, e.sequence_nr))
            if part is not None:
                intervals.append((e.time_range.start, e.time_range.end, part))
    # Exclusive time: intervals nest on the thread that runs them (CPU autograd runs on the
    # caller's thread), so a stack of open intervals gives each one's direct children.
    intervals.sort(key=lambda i: (i[0], -i[1]))
    out = dict.fromkeys(PARTS, 0.0)
    stack: list[list[Any]] = []  # [end, part, exclusive]

    def close(item):
        out[item[1]] = out.get(item[1], 0.0) + item[2]

    for start, end, part in intervals:
        while stack and stack[-1][0] <= start:
            close(stack.pop())
        if stack:
            stack[-1][2] -= end - start
        stack.append([end, part, end - start])
    while stack:
        close(stack.pop())
    return out


def profile_update(run: Callable[[], Any], backbone, reward) -> tuple[dict[str, float], Any]:
    """Run ``run(reward)`` once under the profiler with the parts scoped; returns the seconds per
    part (and ``rest`` and ``total``, the profiled wall time) and what ``run`` returned."""
    import time

    wrapped = ScopedReward(reward)
    with scoped(backbone), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        result = run(wrapped)
        total = time.perf_counter() - start
    parts = {k: v / 1e6 for k, v in attribute(prof.events()).items()}
    parts["rest"] = max(0.0, total - sum(parts.values()))
    parts["total"] = total
    return parts, result
