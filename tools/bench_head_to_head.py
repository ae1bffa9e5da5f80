"""RLR against what users run today (GRPO, DiffusionNFT, DDPO with PPO) and against backprop, tuned alike.

Every method fine-tunes the same preset of the shipped testbed from the same seeds, and a fixed
evaluation set (the same prompts and seeds for every run and every point of a curve) is scored by
the reward and by the analytic ground truth (``rlr_video/testbed/evaluate.py``), the referee:

- ``tiny-shapes-direction``: "moving down", which the chain decides in its first half.
  ``truth_target`` is the share of evaluation videos measured moving down.
- ``tiny-shapes``: brightness, which the last steps decide. The reward is the mean pixel value,
  an analytic measurement no model can fool, so ``truth_target`` is that measurement itself.
- ``tiny-shapes-wan-direction`` and ``tiny-shapes-wan``: the same two tasks with the flow-matching
  testbed (a ``WanPipeline``) on the flow SDE that Flow-GRPO trains Wan with.

``truth_all_three`` is the share of videos that keep the prompt's colour and shape and move as
asked (down on the direction task, the prompt's own direction on the brightness task): what
chasing the reward costs.

**Methods** (``method_overrides``): ``rlr`` (the preset), ``grpo`` (Flow-GRPO's Wan 2.1 preset:
groups of 4 videos per prompt, clip range 1e-3, beta 0.004, timestep_fraction 0.99, one inner
epoch), ``grpo_fast`` (Flow-GRPO-Fast: a window of 3 stochastic, trained steps; on request with
``--methods``, and on the flow-matching tasks only), ``nft`` (DiffusionNFT), ``lr_ppo`` (DDPO:
REINFORCE over every step with PPO's clip 1e-4 and two updates per sampled batch), ``truncated_bp``
at RLR's backprop depth (its ``fo_steps``) and ``full_bp``.

**Budgets.** Compute is counted in denoiser-call equivalents on one video (a forward 1, a backward
2: the estimators' ``calls_forward`` and ``calls_backward``, times the videos of a micro-batch). C
is what RLR spends on ``--samples`` training videos; every run goes on until it has seen
``--samples`` videos AND spent C, so each method is measured at equal samples (N) and at equal
compute (C, read off its curve by linear interpolation between evaluations). A method cheaper per
video than RLR runs past N samples.

**Fair tuning.** Every method gets the same budget: each learning rate of ``--lrs`` trains once from
the tuning seed (not one of the evaluation seeds) for ``--tune-samples`` videos (and at least RLR's
compute on them); the best final ``truth_target`` (ties: ``truth_all_three``, then the reward)
picks the learning rate of that method on that task. All of it is recorded in the JSON.

**Seeds.** ``--seeds`` for every method, and ``--extra-seeds`` for the two methods with the best mean
``truth_target`` at N samples on that task.

**Resumable.** Every finished unit (the base model's evaluation, a tuning run, a (task, method,
seed) run) is a JSON file in ``--work``; a new invocation with the same settings skips them and
``--out`` is rewritten after every unit, keeping the tasks an earlier run wrote there that this one
does not run (``earlier_commands`` names what made them). A unit killed half-way goes on from its
last evaluation (its checkpoint and curve are kept beside its file, ``*.partial``) and ends as it
would have uninterrupted; only its wall time differs. ``--workers`` runs that many units at once, each a
process with ``--threads`` torch threads.

    python tools/bench_head_to_head.py [--tasks tiny-shapes-direction tiny-shapes] [--methods ...]
        [--samples 512] [--seeds 0 1 2] [--extra-seeds 3 4] [--lrs 3e-4 1e-3 3e-3] [--workers 2]

writes ``benchmarks/head_to_head.json`` and ``benchmarks/head_to_head.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
CURVE_KEYS = ("truth_target", "truth_all_three", "reward")
GRPO_GROUP = 4  # Flow-GRPO's Wan 2.1 preset: 4 videos per prompt (config/grpo.py, general_ocr_wan2_1)
DEFAULT_METHODS = ("rlr", "grpo", "nft", "lr_ppo", "truncated_bp", "full_bp")
# Defined on the flow-matching SDE only: Flow-GRPO-Fast's window (its reference samples SD3 on it); a
# task whose preset samples another chain (tiny-shapes' DDIM) skips them.
FLOW_ONLY = ("grpo_fast",)


def method_overrides(depth: int) -> dict[str, list[str]]:
    """Config overrides per method on top of a task's preset (RLR's own settings); ``depth`` is
    RLR's backprop depth (the preset's ``fo_steps``)."""
    return {
        "rlr": [],
        # Flow-GRPO's Wan 2.1 preset (config/grpo.py, general_ocr_wan2_1), the estimator's defaults:
        # clip_range 1e-3, beta 0.004, timestep_fraction 0.99, adv_clip_max 5, group std, 1 inner epoch
        "grpo": ["estimator.name=grpo", f"train.group_size={GRPO_GROUP}"],
        # Flow-GRPO-Fast (config/grpo.py, pickscore_sd3_fast_nocfg): only a window of 3 consecutive
        # steps in the first half of the chain is stochastic and trained, the rest is the ODE; clip
        # range 1e-5, no KL. Not in the default --methods; FLOW_ONLY.
        "grpo_fast": [
            "estimator.name=grpo",
            f"train.group_size={GRPO_GROUP}",
            "estimator.sde_window_size=3",
            "estimator.clip_range=1e-5",
            "estimator.beta=0",
        ],
        "nft": ["estimator.name=nft", f"train.group_size={GRPO_GROUP}"],
        # DDPO (kvablack/ddpo-pytorch config/base.py): clip_range 1e-4 on the per-element ratio; the
        # sampled batch is used for two updates, so the clip acts. DDPO has no state baseline: a
        # preset's (the flow-matching ones) is RLR's own setting
        "lr_ppo": [
            "estimator.name=lr",
            "estimator.ppo_clip=1e-4",
            "estimator.inner_epochs=2",
            "estimator.state_baseline=false",
        ],
        "truncated_bp": ["estimator.name=truncated_bp", f"estimator.K={depth}"],  # AlignProp / VADER / DRaFT-K
        "full_bp": ["estimator.name=full_bp"],
    }


def task_target(config) -> tuple[dict[str, str] | None, str]:
    """(the ground truth's target words, the key of ``evaluate``'s result that is ``truth_target``).

    A ``clip_words`` reward with a ``target`` asks for those words whatever the prompt says: the
    ground truth is checked against the retargeted prompts, and ``truth_target`` is that
    attribute's accuracy. Any other reward must be analytic (brightness, redness, ...): then the
    reward is itself the measurement, and ``truth_target`` is the evaluation reward.
    """
    spec = config.reward
    if isinstance(spec, dict) and "clip_words" in spec and isinstance(spec["clip_words"], dict):
        target = spec["clip_words"].get("target")
        if target:
            if len(target) != 1:
                raise ValueError(f"reward.clip_words.target {target}: one attribute, to name truth_target")
            return dict(target), next(iter(target))
    name = spec if isinstance(spec, str) else None
    if name not in ("brightness", "redness", "color_match"):
        raise ValueError(
            f"reward {spec!r}: the head-to-head needs an analytic reward (brightness, redness, color_match) "
            "or clip_words with a target, so that the ground truth can referee it"
        )
    return None, "reward"


# ---------------------------------------------------------------------- settings and units


@dataclass(frozen=True)
class Settings:
    """Everything that decides the results; a resumed run must have the same."""

    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    samples: int  # the horizon N, training videos per run
    seeds: tuple[int, ...]
    extra_seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    tune_samples: int
    tune_seed: int
    eval_every: int  # training videos between evaluations
    eval_videos: int
    threads: int
    overrides: tuple[str, ...]  # for every run


# The settings a finished unit depends on. Tasks, methods and seeds may be added on a resume (each
# unit is one of them); threads and workers change the speed only.
DECISIVE = ("samples", "lrs", "tune_samples", "tune_seed", "eval_every", "eval_videos", "overrides")


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work."""

    kind: str  # "base" (evaluate the untrained model, measure RLR's compute), "tune", "run"
    task: str
    method: str = ""
    seed: int = -1
    lr: float = 0.0

    def path(self, work: Path) -> Path:
        if self.kind == "base":
            return work / self.task / "base.json"
        if self.kind == "tune":
            return work / self.task / "tune" / self.method / f"lr-{self.lr:g}.json"
        return work / self.task / "runs" / self.method / f"seed-{self.seed}.json"

    def label(self) -> str:
        extra = {"base": "", "tune": f" lr {self.lr:g}", "run": f" seed {self.seed}"}[self.kind]
        return f"{self.kind} {self.task} {self.method}{extra}".replace("  ", " ")


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write(path: Path, data: dict) -> None:
    """Atomic: a unit's file exists only once it is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


@functools.cache
def samples_flow_sde(task: str) -> bool:
    """Whether ``task``'s preset samples on the flow-matching SDE (builds its model once)."""
    from rlr_video.chain.flow import FlowSDETransition
    from rlr_video.config import load_config
    from rlr_video.train.model import build_backbone

    return isinstance(build_backbone(load_config(task).model).transition, FlowSDETransition)


def task_methods(settings: Settings, task: str) -> tuple[str, ...]:
    """``--methods`` that apply to ``task`` (``FLOW_ONLY`` ones on flow-matching tasks only)."""
    if not any(m in FLOW_ONLY for m in settings.methods) or samples_flow_sde(task):
        return settings.methods
    return tuple(m for m in settings.methods if m not in FLOW_ONLY)


def chosen_lr(settings: Settings, work: Path, task: str, method: str) -> float | None:
    """The tuned learning rate, or None while a tuning run is missing."""
    results = [_read(Unit("tune", task, method, lr=lr).path(work)) for lr in settings.lrs]
    if any(r is None for r in results):
        return None
    best = max(results, key=lambda r: (r["final"]["truth_target"], r["final"]["truth_all_three"], r["final"]["reward"]))
    return best["lr"]


def best_two(settings: Settings, work: Path, task: str) -> list[str] | None:
    """The two methods with the best mean truth_target at N samples over ``--seeds``, or None
    while one of those runs is missing."""
    means = {}
    for method in task_methods(settings, task):
        runs = [_read(Unit("run", task, method, seed).path(work)) for seed in settings.seeds]
        if any(r is None for r in runs):
            return None
        means[method] = float(np.mean([r["at_samples"]["truth_target"] for r in runs]))
    return sorted(means, key=means.get, reverse=True)[:2]


def plan(settings: Settings, work: Path) -> list[tuple[Unit, bool]]:
    """Every unit still to do, in priority order, each with whether it can start now.

    Order, task by task: the base unit; method by method, its tuning runs and its first seed;
    then the other evaluation seeds, one seed over every method at a time; after every task, the
    extra seeds. Whatever finishes first is a comparison of the first methods on the first task,
    growing by methods, then by seeds.
    """
    units: list[tuple[Unit, bool]] = []
    for task in settings.tasks:
        base_done = Unit("base", task).path(work).is_file()
        units.append((Unit("base", task), True))
        for i, seed in enumerate(settings.seeds):
            for method in task_methods(settings, task):
                if i == 0:
                    units += [(Unit("tune", task, method, lr=lr), base_done) for lr in settings.lrs]
                ready = base_done and chosen_lr(settings, work, task, method) is not None
                units.append((Unit("run", task, method, seed), ready))
    for task in settings.tasks:
        best = best_two(settings, work, task) if settings.extra_seeds else []
        if best is None:  # not known yet: a placeholder that cannot start
            units.append((Unit("run", task, "(the two best)", settings.extra_seeds[0]), False))
            continue
        for seed in settings.extra_seeds:
            for method in best:
                units.append((Unit("run", task, method, seed), True))
    return [(u, ready) for u, ready in units if not u.path(work).is_file()]


# ---------------------------------------------------------------------- one unit (in a worker)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def run_unit(unit: Unit, settings: Settings, work: Path) -> dict:
    """Do ``unit`` and write its file; returns its result."""
    torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    partial = unit.path(work).with_suffix(".partial")  # a training unit's checkpoints, kept if killed
    with tempfile.TemporaryDirectory() as tmp:
        if unit.kind == "base":
            result = base_unit(unit.task, settings, Path(tmp))
        else:
            base = _read(Unit("base", unit.task).path(work))
            tuning = unit.kind == "tune"
            lr = unit.lr if tuning else chosen_lr(settings, work, unit.task, unit.method)
            samples = settings.tune_samples if tuning else settings.samples
            result = train_unit(
                unit.task,
                unit.method,
                settings.tune_seed if tuning else unit.seed,
                lr,
                samples,
                compute=samples / settings.samples * base["compute_budget"],
                settings=settings,
                base=base,
                workdir=partial,
                curve=not tuning,
            )
    result["wall_seconds"] = round(time.perf_counter() - start, 1)  # of the last start
    _write(unit.path(work), result)
    shutil.rmtree(partial, ignore_errors=True)
    return result


def _config(task: str, overrides: list[str], seed: int, out: Path, steps: int = 1_000_000):
    from rlr_video.config import load_config

    run_keys = [f"train.seed={seed}", f"train.steps={steps}", f"train.output_dir={out}", "train.progress=false"]
    return load_config(task, [*overrides, *run_keys, f"train.checkpoint_every={steps}"])


def base_unit(task: str, settings: Settings, workdir: Path) -> dict:
    """The untrained model on the evaluation set (every curve's first point), and the compute C
    that RLR spends on N samples (its calls per update, counted on one update)."""
    from rewards import build_reward
    from rlr_video.train.trainer import Trainer

    config = _config(task, list(settings.overrides), settings.seeds[0], workdir / "base", steps=1)
    target, key = task_target(config)
    trainer = Trainer(config)
    start = _evaluate(trainer, build_reward(config.reward), settings.eval_videos, target, key)
    record = trainer.train()[0]
    per_update = (record["calls_forward"] + 2 * record["calls_backward"]) * config.train.batch_size
    updates = settings.samples / (config.train.batch_size * config.train.grad_accum) * trainer._reuse
    return {
        "task": task,
        "start": start,
        "rlr_compute_per_update": per_update,
        "compute_budget": per_update * updates,
        "truth_target_key": key,
        "target": target,
        "config": config.to_dict(),
    }


def _evaluate(trainer, reward, videos: int, target, key: str) -> dict:
    from rlr_video.testbed.evaluate import GROUND_TRUTH_KEYS, eval_set, evaluate

    prompts, seeds = eval_set(trainer.prompts, videos)
    result = evaluate(trainer.model, reward, prompts, seeds, target=target)
    point = {k: result[k] for k in ("reward", "reward_se", *GROUND_TRUTH_KEYS)}
    point["truth_target"] = result[key]
    point["truth_all_three"] = result["all"]
    return point


def one_update_peak(trainer, seed: int) -> float:
    """Peak tensor memory (MiB) of one more update on a training batch, apart from the timed steps
    (``rlr_video.memory.probe.measure_peak``: the CPU tensor tracker here, CUDA's peak on a GPU)."""
    from rlr_video.memory.probe import measure_peak

    t = trainer.config.train
    distinct = list(trainer.prompts[: t.batch_size // t.group_size])
    prompts = [p for p in distinct for _ in range(t.group_size)]
    generator = torch.Generator().manual_seed(seed)
    peak = measure_peak(lambda: trainer.estimator.estimate(trainer.backbone, trainer.reward, prompts, generator))
    return peak.peak / 2**20


# What a killed unit resumes with besides the trainer's checkpoint (train_unit's progress.json).
BUDGET_STATE = ("compute", "seconds", "curve", "records")


def train_unit(
    task: str,
    method: str,
    seed: int,
    lr: float,
    samples: int,
    compute: float,
    settings: Settings,
    base: dict,
    workdir: Path,
    curve: bool,
) -> dict:
    """Train ``method`` until it has seen ``samples`` videos and spent ``compute``; evaluate every
    ``settings.eval_every`` videos (``curve``) or only at the end. After each evaluation the run
    is checkpointed in ``workdir`` with its curve, so a killed unit goes on from there and ends
    as an uninterrupted one would (the trainer resumes exactly)."""
    from rewards import build_reward
    from rlr_video.train.trainer import Trainer

    depth = base["config"]["estimator"]["fo_steps"]
    overrides = [*settings.overrides, *method_overrides(depth)[method], f"optim.lr={lr!r}"]
    config = _config(task, overrides, seed, workdir / "run")
    target, key = task_target(config)
    reward = build_reward(config.reward)
    batch = config.train.batch_size * config.train.grad_accum

    progress = workdir / "progress.json"  # the budget counters and curve at the last checkpoint
    saved = _read(progress)
    if saved is None:  # killed before its first evaluation: start afresh
        shutil.rmtree(workdir / "run", ignore_errors=True)

    class BudgetTrainer(Trainer):
        def __init__(self) -> None:
            super().__init__(config, resume=workdir / saved["checkpoint"] if saved else None)
            self.compute, self.seconds, self.curve = 0.0, 0.0, [self._point(dict(base["start"]), 0)]
            self.records: list[dict] = []
            if saved:
                self.compute, self.seconds, self.curve, self.records = (saved[k] for k in BUDGET_STATE)

        def _point(self, point: dict, samples: int) -> dict:
            point.update(samples=samples, compute=self.compute if samples else 0.0, step=self.step)
            point["seconds"] = self.seconds if samples else 0.0
            return point

        def on_step_end(self, step: int, record: dict) -> None:
            # calls on a micro-batch, summed over micro-batches: times its videos, calls on one video
            self.compute += (record["calls_forward"] + 2 * record["calls_backward"]) * config.train.batch_size
            self.seconds += record["step_time"]
            seen = self.position * batch
            done = seen >= samples and self.compute >= compute - 1e-9
            fresh = self.step % self._reuse == 0  # a sampled batch's updates are all done
            due = curve and fresh and seen % settings.eval_every == 0 and seen > self.curve[-1]["samples"]
            self.records.append(record)
            if done or due:
                point = _evaluate(self, reward, settings.eval_videos, target, key)
                self.curve.append(self._point(point, seen))
                if not done:
                    checkpoint = self._save()
                    state = dict(zip(BUDGET_STATE, (self.compute, self.seconds, self.curve, self.records), strict=True))
                    _write(progress, {"checkpoint": str(checkpoint.relative_to(workdir)), **state})
                print(
                    f"    {task} {method} seed {seed} lr {lr:g}: {seen} samples, compute {self.compute:.0f}: "
                    f"truth_target {point['truth_target']:.3f}, all three {point['truth_all_three']:.3f}, "
                    f"reward {point['reward']:.4f}",
                    flush=True,
                )
            if done:
                self.config.train.steps = self.step  # stop here

    trainer = BudgetTrainer()
    trainer.train()
    records = trainer.records
    result = {
        "task": task,
        "method": method,
        "seed": seed,
        "lr": lr,
        "overrides": overrides,
        "steps": trainer.step,
        "final": {k: trainer.curve[-1][k] for k in (*CURVE_KEYS, "samples", "compute")},
        # on the curve: at N samples and at the compute budget C (None for a tuning run)
        "at_samples": _interpolate(trainer.curve, "samples", settings.samples) if curve else None,
        "at_compute": _interpolate(trainer.curve, "compute", base["compute_budget"]) if curve else None,
        "compute_per_sample": trainer.compute / (trainer.position * batch),
        "seconds": trainer.seconds,
        "backprop_depth": float(np.mean([r.get("backprop_depth", float("nan")) for r in records])),
        "estimator_stats": _mean_stats(records),
    }
    if curve:
        result["curve"] = trainer.curve
        result["peak_memory_mib"] = one_update_peak(trainer, seed)
    return result


def _mean_stats(records: list[dict]) -> dict:
    """The estimator's diagnostics averaged over the updates (clip fraction, KL, ...)."""
    keys = ("clip_fraction", "approx_kl", "kl", "policy_loss", "zero_std_ratio", "group_reward_std", "grad_norm")
    return {k: float(np.mean([r[k] for r in records if k in r])) for k in keys if any(k in r for r in records)}


def _interpolate(curve: list[dict], x_key: str, x: float) -> dict:
    """Every curve value at ``x`` of ``x_key``, linear between the two evaluations around it
    (None beyond the curve's end)."""
    xs = [p[x_key] for p in curve]
    if x > xs[-1] + 1e-9:
        return dict.fromkeys(CURVE_KEYS)
    return {k: float(np.interp(x, xs, [p[k] for p in curve])) for k in CURVE_KEYS}


# ---------------------------------------------------------------------- the JSON


def _mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se


def method_entry(runs: list[dict]) -> dict:
    """One method on one task: per seed, its curves (one list per seed, on the evaluations), its
    values at the end, at N samples and at the compute budget C, its peak memory and seconds;
    with the mean and standard error over seeds of each value."""
    entry: dict = {"lr": runs[0]["lr"], "overrides": runs[0]["overrides"], "seeds": [r["seed"] for r in runs]}
    for key in ("samples", "compute", *CURVE_KEYS):
        entry[key] = [[p[key] for p in r["curve"]] for r in runs]
    entry["seconds_curve"] = [[p["seconds"] for p in r["curve"]] for r in runs]
    for where in ("final", "at_samples", "at_compute"):
        keys = (*CURVE_KEYS, "samples", "compute") if where == "final" else CURVE_KEYS
        entry[where] = {}
        for key in keys:
            values = [r[where][key] for r in runs]
            entry[where][key] = values
            if None not in values:
                entry[where][f"{key}_mean"], entry[where][f"{key}_se"] = _mean_se(values)
    for key in ("peak_memory_mib", "seconds", "steps"):
        entry[key] = [r[key] for r in runs]
    entry["peak_memory_mib_mean"] = float(np.mean(entry["peak_memory_mib"]))
    entry["seconds_mean"] = float(np.mean(entry["seconds"]))
    entry["compute_per_sample"] = float(np.mean([r["compute_per_sample"] for r in runs]))
    entry["backprop_depth"] = runs[0]["backprop_depth"]
    entry["estimator_stats"] = [r["estimator_stats"] for r in runs]
    return entry


def mean_curve(entry: dict, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean and standard error over seeds of ``y_key`` against ``x_key``, on the first seed's
    x points, each seed interpolated onto them (they coincide when the per-update cost is fixed)."""
    xs = np.asarray(entry[x_key][0], dtype=float)
    end = min(x[-1] for x in entry[x_key])
    xs = xs[xs <= end + 1e-9]
    ys = np.array([np.interp(xs, x, y) for x, y in zip(entry[x_key], entry[y_key], strict=True)])
    se = ys.std(0, ddof=1) / math.sqrt(len(ys)) if len(ys) > 1 else np.zeros(len(xs))
    return xs, ys.mean(0), se


def _first_reach(xs: np.ndarray, ys: np.ndarray, level: float) -> float | None:
    """The smallest x where the piecewise-linear curve reaches ``level`` (None if it never does)."""
    if ys[0] >= level:
        return float(xs[0])
    for i in range(1, len(xs)):
        if ys[i] >= level:
            return float(xs[i - 1] + (level - ys[i - 1]) / (ys[i] - ys[i - 1]) * (xs[i] - xs[i - 1]))
    return None


def _paired(a: dict, b: dict, where: str, key: str) -> dict:
    """a minus b on the seeds both have, mean and standard error of the per-seed differences."""
    seeds = [s for s in a["seeds"] if s in b["seeds"]]
    values_a = [a[where][key][a["seeds"].index(s)] for s in seeds]
    values_b = [b[where][key][b["seeds"].index(s)] for s in seeds]
    if None in values_a or None in values_b:
        return {"seeds": seeds, "diff": None, "se": None}
    mean, se = _mean_se(np.subtract(values_a, values_b)) if seeds else (float("nan"), float("nan"))
    return {"seeds": seeds, "diff": mean, "se": se}


def verdict(methods: dict, budget: dict) -> dict:
    """Issue 29's stretch targets for RLR against GRPO, measured on the seed means."""
    if "rlr" not in methods or "grpo" not in methods:
        return {}
    rlr, grpo = methods["rlr"], methods["grpo"]
    out: dict = {}
    grpo_final = grpo["final"]["truth_target_mean"]
    grpo_compute = float(np.mean(grpo["final"]["compute"]))
    xs, ys, _ = mean_curve(rlr, "compute", "truth_target")
    reach = _first_reach(xs, ys, grpo_final)
    out["grpo_final_truth_target"] = grpo_final
    out["grpo_final_compute"] = grpo_compute
    out["rlr_compute_to_reach_it"] = reach
    out["rlr_compute_to_reach_it_over_grpo_compute"] = None if reach is None else reach / grpo_compute
    out["rlr_reaches_grpo_final_in_half_its_compute"] = reach is not None and reach <= 0.5 * grpo_compute
    at_c = _paired(rlr, grpo, "at_compute", "truth_target")
    out["rlr_minus_grpo_truth_target_at_equal_compute"] = at_c
    out["rlr_0.1_above_grpo_at_equal_compute"] = at_c["diff"] is not None and at_c["diff"] >= 0.1
    for where in ("at_samples", "at_compute"):
        d = _paired(rlr, grpo, where, "truth_all_three")
        out[f"rlr_minus_grpo_truth_all_three_{where}"] = d
        out[f"rlr_truth_all_three_no_worse_than_grpo_{where}"] = d["diff"] is not None and d["diff"] >= 0
    out["budget"] = budget
    return out


def plateau(methods: dict, settings: Settings) -> dict:
    """Whether the best method (mean truth_target at N samples) still climbed over the last quarter
    of the horizon: its gain from 3N/4 to N samples, paired by seed."""
    best = max(methods, key=lambda m: methods[m]["at_samples"]["truth_target_mean"])
    entry = methods[best]
    gains = []
    for xs, ys in zip(entry["samples"], entry["truth_target"], strict=True):
        gains.append(float(np.interp(settings.samples, xs, ys) - np.interp(0.75 * settings.samples, xs, ys)))
    mean, se = _mean_se(gains)
    return {"best": best, "gain_last_quarter": mean, "se": se, "plateaued": bool(mean < max(0.02, 2 * se))}


def _ranking(methods: dict, where: str) -> list[list]:
    """[method, mean truth_target] from best to worst, at N samples or at the compute budget."""
    means = {m: e[where].get("truth_target_mean") for m, e in methods.items()}
    return sorted(([m, v] for m, v in means.items() if v is not None), key=lambda mv: -mv[1])


def assemble(settings: Settings, work: Path, command: str) -> dict:
    """The JSON from every finished unit in ``work``."""
    tasks, tuning, configs = {}, {}, {}
    for task in settings.tasks:
        base = _read(Unit("base", task).path(work))
        if base is None:
            continue
        configs[task] = base["config"]
        tuning[task] = {}
        for method in task_methods(settings, task):
            tunes = [_read(Unit("tune", task, method, lr=lr).path(work)) for lr in settings.lrs]
            tuning[task][method] = {
                "lrs": [t["lr"] for t in tunes if t],
                **{k: [t["final"][k] for t in tunes if t] for k in (*CURVE_KEYS, "samples", "compute")},
                "chosen": chosen_lr(settings, work, task, method),
            }
        methods = {}
        for method in task_methods(settings, task):
            runs = [
                r
                for seed in (*settings.seeds, *settings.extra_seeds)
                if (r := _read(Unit("run", task, method, seed).path(work)))
            ]
            if runs:
                methods[method] = method_entry(runs)
        budget = {"samples": settings.samples, "compute": base["compute_budget"]}
        tasks[task] = {
            "truth_target": (
                f"share of evaluation videos measured moving {base['target'][base['truth_target_key']]}"
                if base["target"]
                else f"evaluation {base['truth_target_key']}: the analytic {base['config']['reward']} itself"
            ),
            "budget": budget,
            "rlr_compute_per_update": base["rlr_compute_per_update"],
            "start": base["start"],
            "methods": methods,
            "best_two": best_two(settings, work, task),
            "ranking": {where: _ranking(methods, where) for where in ("at_samples", "at_compute")},
            "verdict": verdict(methods, budget),
            "plateau": plateau(methods, settings) if methods else None,
        }
    return {
        "command": command,
        "settings": asdict(settings),
        "machine": {
            "torch_threads_per_worker": settings.threads,
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
        },
        "config": configs,
        "tuning": {
            "budget_per_method": (
                f"{len(settings.lrs)} learning rates x 1 run of {settings.tune_samples} samples (and at least "
                f"RLR's compute on them) from seed {settings.tune_seed}; best final truth_target "
                "(ties: truth_all_three, then the reward)"
            ),
            "tasks": tuning,
        },
        "tasks": tasks,
    }


def keep_earlier_tasks(result: dict, earlier: dict | None) -> dict:
    """``result`` with the tasks of an ``earlier`` JSON that it does not hold (their results, tuning
    and config, and the command that made them), so tasks measured by separate runs, whose units
    may be gone, end up in one file."""
    if earlier is None:
        return result
    kept = {t: e for t, e in earlier["tasks"].items() if t not in result["settings"]["tasks"]}
    for task in kept:
        result["config"][task] = earlier["config"][task]
        result["tuning"]["tasks"][task] = earlier["tuning"]["tasks"][task]
        result["tasks"][task] = kept[task]
        result.setdefault("earlier_commands", {})[task] = earlier.get("earlier_commands", {}).get(
            task, earlier["command"]
        )
    return result


# ---------------------------------------------------------------------- the figure


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = {k: v for k, v in result["tasks"].items() if v["methods"]}
    if not tasks:
        return
    panels = [
        ("samples", "truth_target"),
        ("compute", "truth_target"),
        ("compute", "truth_all_three"),
        ("samples", "reward"),
    ]
    fig, axes = plt.subplots(len(tasks), len(panels), figsize=(4.2 * len(panels), 3.3 * len(tasks)), dpi=100)
    axes = np.atleast_2d(axes)
    names = list(result["settings"]["methods"])
    for row, (task, entry) in zip(axes, tasks.items(), strict=True):
        for ax, (x_key, y_key) in zip(row, panels, strict=True):
            for name, method in entry["methods"].items():
                colour = f"C{names.index(name)}"
                xs, mean, se = mean_curve(method, x_key, y_key)
                ax.plot(xs, mean, color=colour, label=f"{name} ({len(method['seeds'])} seeds)")
                ax.fill_between(xs, mean - se, mean + se, color=colour, alpha=0.15)
            budget = entry["budget"][x_key]
            ax.axvline(budget, color="grey", lw=0.8, ls=":")
            ax.set_xlabel("training samples" if x_key == "samples" else "compute (denoiser-call equivalents)")
            ax.set_ylabel(y_key if y_key != "reward" else "eval reward")
            ax.set_title(f"{task}", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    fig.suptitle("mean ± se over seeds, fixed evaluation set, ground-truth scorer; dotted: the equal budget")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------- driver


def print_table(result: dict) -> None:
    for task, entry in result["tasks"].items():
        print(f"\n{task}: start truth_target {entry['start']['truth_target']:.3f}, budget {entry['budget']}")
        print(f"{'method':<14}{'lr':>8}{'seeds':>6}{'target @N':>16}{'all3 @N':>16}{'target @C':>16}{'MiB':>8}")
        for name, m in entry["methods"].items():
            s, c = m["at_samples"], m["at_compute"]
            print(
                f"{name:<14}{m['lr']:>8g}{len(m['seeds']):>6}"
                f"{s['truth_target_mean']:>9.3f} ± {s['truth_target_se']:.3f}"
                f"{s['truth_all_three_mean']:>9.3f} ± {s['truth_all_three_se']:.3f}"
                + (f"{c['truth_target_mean']:>9.3f} ± {c['truth_target_se']:.3f}" if "truth_target_mean" in c else "")
                + f"{m['peak_memory_mib_mean']:>8.0f}"
            )


def drive(settings: Settings, work: Path, workers: int, publish) -> None:
    """Run every unit still to do, ``workers`` at a time (1: in this process), calling
    ``publish`` after each."""
    if workers == 1:
        _worker_init(settings.threads)
        while ready := [u for u, ok in plan(settings, work) if ok]:
            print(f"start {ready[0].label()}", flush=True)
            started = time.perf_counter()
            run_unit(ready[0], settings, work)
            print(f"done {ready[0].label()} ({time.perf_counter() - started:.0f} s)", flush=True)
            publish()
        _check_all_done(settings, work)
        return
    running: dict = {}  # future -> (unit, start time)
    context = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(settings.threads,)
    ) as pool:
        while True:
            busy = {unit for unit, _ in running.values()}
            ready = [u for u, ok in plan(settings, work) if ok and u not in busy]
            while ready and len(running) < workers:
                unit = ready.pop(0)
                print(f"start {unit.label()}", flush=True)
                running[pool.submit(run_unit, unit, settings, work)] = (unit, time.perf_counter())
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                unit, started = running.pop(future)
                future.result()  # a failed unit stops the benchmark with its error
                print(f"done {unit.label()} ({time.perf_counter() - started:.0f} s)", flush=True)
            publish()
    _check_all_done(settings, work)


def _check_all_done(settings: Settings, work: Path) -> None:
    left = plan(settings, work)
    if left:
        raise SystemExit(f"stuck: {[u.label() for u, _ in left]} cannot start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value) for every run")
    parser.add_argument("--tasks", nargs="+", default=["tiny-shapes-direction", "tiny-shapes"])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(method_overrides(1)))
    parser.add_argument("--samples", type=int, default=512, help="the horizon N: training videos per run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--extra-seeds", nargs="*", type=int, default=[3, 4], help="for the two best methods")
    parser.add_argument("--lrs", nargs="+", type=float, default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--tune-samples", type=int, default=128)
    parser.add_argument("--tune-seed", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=64, help="training videos between evaluations")
    parser.add_argument("--eval-videos", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2, help="units run at once, one process each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--work", type=Path, default=BENCHMARKS / "head_to_head_units", help="finished units")
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "head_to_head.json")
    parser.add_argument("--plot", type=Path, default=BENCHMARKS / "head_to_head.png")
    args = parser.parse_args()

    settings = Settings(
        tasks=tuple(args.tasks),
        methods=tuple(args.methods),
        samples=args.samples,
        seeds=tuple(args.seeds),
        extra_seeds=tuple(args.extra_seeds),
        lrs=tuple(args.lrs),
        tune_samples=args.tune_samples,
        tune_seed=args.tune_seed,
        eval_every=args.eval_every,
        eval_videos=args.eval_videos,
        threads=args.threads,
        overrides=tuple(args.overrides),
    )
    if args.tune_seed in (*args.seeds, *args.extra_seeds):
        parser.error(f"--tune-seed {args.tune_seed} is an evaluation seed: tuning must not see them")
    if args.samples % args.eval_every or args.tune_samples > args.samples:
        parser.error("--samples must be a multiple of --eval-every, and --tune-samples at most --samples")
    recorded = _read(args.work / "settings.json")
    mine = json.loads(json.dumps(asdict(settings)))  # tuples as lists, as they were written
    differ = [k for k in DECISIVE if recorded is not None and recorded[k] != mine[k]]
    if differ:
        raise SystemExit(f"{args.work} holds units of other settings ({', '.join(differ)}): use another --work")
    _write(args.work / "settings.json", mine)
    command = "python tools/bench_head_to_head.py " + " ".join(sys.argv[1:])

    def publish() -> None:
        result = keep_earlier_tasks(assemble(settings, args.work, command), _read(args.out))
        _write(args.out, result)
        plot(result, args.plot)

    drive(settings, args.work, args.workers, publish)
    publish()
    print_table(json.loads(args.out.read_text()))
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
