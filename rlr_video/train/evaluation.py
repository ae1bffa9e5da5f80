"""Held-out evaluation during training (``train.eval``): a guard against reward hacking.

A reward model can be fooled: a fine-tune that raises the training reward may do so by making
videos the reward likes and people do not. The guard samples a fixed set of videos from
held-out prompts every ``train.eval.every`` steps and scores them with held-out rewards (on the
testbed the analytic ground truth, ``truth``; elsewhere a reward model other than the trained
one) and with the training reward. When the training reward rises while a held-out reward
falls, the run's summary says so (``rlr_video.train.summary``).

The set is the same (prompt, seed) pairs each time (``rlr_video.chain.sample.eval_set``), so
two evaluations differ only by the weights. Evaluating draws nothing from the training streams:
every random state is saved before and restored after (a reward or a dropout layer may draw
from the global generators), and inside, each batch seeds the global torch generator from
``(train.eval.seed, batch)``, so an evaluation is repeatable and a resumed run continues
exactly as an uninterrupted one.

With several processes, batch k of the set is sampled by process k mod P, and the scores are
gathered: each batch holds the same videos as in a one-process run, so the logged numbers are
those of one process. With a sharded denoiser (FSDP) every process runs as many batches as
process 0, repeating its last, since each forward pass is a collective.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch

from rlr_video.backbones.multiscale import for_prompts
from rlr_video.chain.sample import eval_set, sample_videos
from rlr_video.prompts import Prompt, encode_prompt, final_prompt, load_prompts
from rlr_video.seeds import derive_seed
from rlr_video.train.distributed import gather_objects, rng_state, set_rng_state
from rlr_video.train.metrics import EVAL_PREFIX, EVAL_TRAINING_REWARD

TRAINING_REWARD = EVAL_TRAINING_REWARD.removeprefix(EVAL_PREFIX)  # the training reward's column
TOTAL = "total"  # a composite held-out reward's weighted sum


class HeldOutEvaluation:
    """The held-out prompts, seeds and rewards of ``train.eval``; :meth:`run` scores a model.

    Args:
        config: the ``train.eval`` section (``rlr_video.config.schema.EvalConfig``).
        training_reward: the reward being trained on, also scored on the held-out videos.
        reward: the held-out reward (default: built from ``config.reward``).
    """

    def __init__(self, config, training_reward: Any, reward: Any = None):
        from rewards import build_reward

        prompts: list[Prompt] = load_prompts(config.path) if config.path is not None else list(config.items)
        count = config.videos if config.videos is not None else len(prompts)
        chosen, self.seeds = eval_set(prompts, count, config.seed)
        self.prompts = [encode_prompt(p) for p in chosen]
        self.seed = config.seed
        self.every = config.every
        self.batch_size = config.batch_size
        self.reward = reward if reward is not None else build_reward(config.reward)
        self.training_reward = training_reward

    def due(self, step: int, last_step: int) -> bool:
        """Whether step ``step`` ends with an evaluation: every ``every`` steps and at the last."""
        return step % self.every == 0 or step == last_step

    def batches(self) -> list[range]:
        n, size = len(self.prompts), self.batch_size
        return [range(start, min(start + size, n)) for start in range(0, n, size)]

    @torch.no_grad()
    def run(
        self,
        model,
        device: torch.device | str = "cpu",
        world: int = 1,
        rank: int = 0,
        collective_forward: bool = False,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> dict[str, float]:
        """The held-out means ``{"eval/<column>": mean}`` of ``model`` (a backbone), on every process.

        Every process must call it (the scores are gathered). ``collective_forward``: the
        denoiser is sharded, so every process runs as many batches as process 0.
        """
        backbone = for_prompts(model, self.prompts)  # multi-scale held-out prompts: a stage per third
        batches = self.batches()
        mine = list(range(rank, len(batches), world))
        if collective_forward:
            rounds = math.ceil(len(batches) / world)
            mine += [mine[-1] if mine else 0] * (rounds - len(mine))  # repeated, and dropped below
        saved = rng_state()
        scored: dict[int, dict[str, list[float]]] = {}
        try:
            for index in mine:
                torch.manual_seed(derive_seed(self.seed, "eval-torch", index))  # dropout and other global draws
                with autocast():
                    scored[index] = self._score(backbone, batches[index], device)
        finally:
            set_rng_state(saved)
        gathered: dict[int, dict[str, list[float]]] = {}
        for part in gather_objects(scored):
            gathered.update(part)
        columns: dict[str, list[float]] = {}
        for index in range(len(batches)):
            for column, values in gathered[index].items():
                columns.setdefault(column, []).extend(values)
        return {EVAL_PREFIX + column: math.fsum(values) / len(values) for column, values in columns.items()}

    def _score(self, backbone, batch: range, device) -> dict[str, list[float]]:
        from rlr_video.scoring import reward_scores

        prompts = [self.prompts[i] for i in batch]
        videos = sample_videos(backbone, prompts, [self.seeds[i] for i in batch]).to(device)
        finals = [final_prompt(p) for p in prompts]
        scores = {self._column(k): v for k, v in reward_scores(self.reward, videos, finals).items()}
        scores[TRAINING_REWARD] = self.training_reward(videos, finals)
        return {column: [float(v) for v in values.float().cpu()] for column, values in scores.items()}

    def _column(self, name: str) -> str:
        """A composite held-out reward's total is ``total``; every other column keeps its name."""
        composite = isinstance(getattr(self.reward, "terms", None), list | tuple)
        return TOTAL if composite and name == self.reward.name else name
