"""Videos sampled one seed per video: what previews, galleries and evaluations compare."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rlr_video.chain.rollout import chain_step, draw_noise
from rlr_video.seeds import derive_seed


def eval_set(prompts: Sequence[str], videos: int, seed: int = 1234) -> tuple[list[str], list[int]]:
    """``videos`` (prompt, seed) pairs cycling through ``prompts``: a fixed evaluation set.

    The seeds come from their own stream (``derive_seed(seed, "eval", i)``), apart from the
    training stream's, so evaluation videos are never training samples. The testbed's
    evaluation and the trainer's held-out evaluation (``train.eval``) both use it.
    """
    if not prompts:
        raise ValueError("eval_set: no prompts")
    return [prompts[i % len(prompts)] for i in range(videos)], [derive_seed(seed, "eval", i) for i in range(videos)]


@torch.no_grad()
def sample_videos(backbone, prompts: Sequence[str], seeds: Sequence[int]) -> Tensor:
    """Decoded videos (B, F, 3, H, W) in [0, 1], video b drawn from ``seeds[b]`` alone.

    Video b equals what ``rollout(backbone, cond, Generator().manual_seed(seeds[b]), 1)``
    samples: initial latents first, then each step's noise, from its own generator. So a video
    does not depend on the batch it was sampled in, and base and fine-tuned models draw the
    same noise for the same (prompt, seed).
    """
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    cond = backbone.encode(list(prompts))
    x = torch.cat([backbone.initial_latents(1, g) for g in generators])
    for step in range(backbone.num_steps, 0, -1):
        noise = torch.cat([draw_noise(x[i : i + 1], g) for i, g in enumerate(generators)])
        x, _, _ = chain_step(backbone, cond, x, step, noise)
    return backbone.decode(x).float().clamp(0, 1).cpu()
