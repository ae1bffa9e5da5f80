"""A weighted sum of rewards: what ``build_reward({"aesthetic": 1.0, "clip": 0.5})`` returns."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from rewards.base import Reward


class CompositeReward:
    """``sum_k w_k · R_k(frames, prompts)``; ``terms`` also gives each part for logging."""

    def __init__(self, terms: Sequence[tuple[float, Reward]]) -> None:
        if not terms:
            raise ValueError("a composite reward needs at least one term")
        names = [reward.name for _, reward in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"composite reward terms need distinct names, got {names}")
        self.terms = [(float(weight), reward) for weight, reward in terms]
        self.name = "+".join(f"{weight:g}*{reward.name}" for weight, reward in self.terms)
        self.differentiable = all(r.differentiable for _, r in self.terms)
        self.needs_prompts = any(getattr(r, "needs_prompts", True) for _, r in self.terms)
        self.takes_video_fps = any(getattr(r, "takes_video_fps", False) for _, r in self.terms)

    def score_terms(self, frames: Tensor, prompts: Sequence[str], video_fps: float | None = None) -> dict[str, Tensor]:
        """Each term's unweighted (B,) score, keyed by its name. ``video_fps`` (the frames' rate)
        goes to the terms that take it (``takes_video_fps``: videoalign)."""
        return {
            reward.name: reward(frames, prompts, video_fps=video_fps)
            if video_fps is not None and getattr(reward, "takes_video_fps", False)
            else reward(frames, prompts)
            for _, reward in self.terms
        }

    def combine(self, scores: dict[str, Tensor]) -> Tensor:
        """The weighted sum of :meth:`score_terms`' output."""
        return sum(weight * scores[reward.name] for weight, reward in self.terms)

    def __call__(self, frames: Tensor, prompts: Sequence[str], video_fps: float | None = None) -> Tensor:
        return self.combine(self.score_terms(frames, prompts, video_fps))

    def __repr__(self) -> str:
        return f"CompositeReward({self.name!r})"
