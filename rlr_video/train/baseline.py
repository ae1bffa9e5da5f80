"""A per-prompt reward baseline: the mean of the last N rewards each prompt received.

Subtracting it keeps every estimator unbiased because it depends only on earlier updates,
never on the sample being scored (as DDPO's per-prompt stat tracker). Every process updates
it with the rewards of all processes, so it stays identical everywhere and is part of the
resume state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch
from torch import Tensor


class PromptBaseline:
    """``baseline(prompts)`` -> (B,) means; 0 for a prompt never scored before."""

    def __init__(self, window: int = 32):
        self.window = window
        self.history: dict[str, deque[float]] = {}

    def __call__(self, prompts: Sequence[str]) -> Tensor:
        means = [sum(h) / len(h) if (h := self.history.get(p)) else 0.0 for p in prompts]
        return torch.tensor(means, dtype=torch.float64)

    def update(self, prompts: Sequence[str], rewards: Sequence[float]) -> None:
        """Add finite rewards (a NaN reward must not poison later updates)."""
        for prompt, reward in zip(prompts, rewards, strict=True):
            if reward == reward and abs(reward) != float("inf"):
                self.history.setdefault(prompt, deque(maxlen=self.window)).append(float(reward))

    def state_dict(self) -> dict:
        return {"window": self.window, "history": {p: list(h) for p, h in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.window = state["window"]
        self.history = {p: deque(h, maxlen=self.window) for p, h in state["history"].items()}
