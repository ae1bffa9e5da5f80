"""The training loop: estimator updates on accelerate, checkpoints, metrics, resume.

One step (optimizer update) of a run with P processes, micro-batch B and accumulation A:

1. each process runs A micro-batches; micro-batch k of process r at step s has the global
   index g = (s A + k) P + r, takes the prompts at stream position g B, and draws all its
   randomness from generators seeded by (seed, g);
2. each micro-batch's estimate (``estimator.estimate`` adds -grad E[R] to ``p.grad``) is
   set aside, and the A estimates are summed, then summed over processes and divided by A P:
   the mean over the global batch, identical on every process;
3. if any process saw a NaN or infinite reward (or gradient) the update is skipped on all of
   them, leaving weights and optimizer state untouched; otherwise the gradient is clipped
   and AdamW steps;
4. every ``train.eval.every`` steps (and before the first and after the last) all processes
   score the held-out set (``rlr_video.train.evaluation``), whose means join the step's record;
5. the main process appends the step's metrics and, every N steps, writes a checkpoint.

Only the main process writes files.
"""

from __future__ import annotations

import io
import math
import os
import resource
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlr_video.backbones.multiscale import FinalPromptReward, for_prompts
from rlr_video.backbones.sharding import accelerate_fsdp_plugin, shard_denoiser, shard_settings
from rlr_video.config import Config
from rlr_video.errors import ConfigError
from rlr_video.prompts import config_prompts, prompts_at
from rlr_video.seeds import derive_seed
from rlr_video.train import checkpoint as ckpt
from rlr_video.train.baseline import PromptBaseline
from rlr_video.train.components import build_components
from rlr_video.train.distributed import all_reduce_sum, broadcast_parameters, gather_objects, rng_state, set_rng_state
from rlr_video.train.evaluation import HeldOutEvaluation
from rlr_video.train.metrics import CURVE_FILE, MetricsWriter, plot_reward_curve
from rlr_video.train.model import load_weights, save_weights
from rlr_video.train.summary import run_summary

# Estimator diagnostics that add up over micro-batches; the others are averaged.
SUMMED_STATS = ("calls_forward", "calls_backward", "nonfinite_rewards")
# Config keys a resumed run may change without changing the run.
RESUMABLE_CHANGES = ("train.steps", "train.progress", "train.log_with", "train.checkpoint_every", "train.keep_last")


class Trainer:
    """Fine-tunes the configured backbone. ``resume``: a checkpoint folder, or ``"auto"`` for
    the latest one in ``train.output_dir`` (a fresh start when there is none). ``imports``:
    the modules the command line imported first (``--import``, custom rewards), which the
    closing ``render`` hint repeats.

    Subclasses may override ``on_gradients`` (called with the reduced gradient of each
    update, before clipping) and ``on_step_end`` (after each step's metrics and checkpoint).
    """

    def __init__(self, config: Config, resume: str | Path | None = None, imports: Sequence[str] = ()):
        from accelerate import Accelerator

        self.config = cfg = config
        self.imports = list(imports)
        self.output_dir = Path(cfg.train.output_dir)
        _check_launch()
        fsdp_plugin = accelerate_fsdp_plugin()  # before a model loads
        # Without a GPU, torchrun / accelerate-launched processes must form a CPU (gloo) group.
        self.accelerator = Accelerator(
            mixed_precision=cfg.train.mixed_precision,
            cpu=not torch.cuda.is_available(),
            log_with=list(cfg.train.log_with) or None,
            project_dir=str(self.output_dir),
            fsdp_plugin=fsdp_plugin,
        )
        acc = self.accelerator
        self.world, self.rank = acc.num_processes, acc.process_index
        self.is_main = acc.is_main_process
        if fsdp_plugin is not None and cfg.train.sharding != "fsdp":
            if self.is_main:
                print(f"accelerate FSDP plugin: train.sharding={cfg.train.sharding} -> fsdp")
            cfg.train.sharding = "fsdp"  # before planning and before config.yaml is written
        self.shard_settings = shard_settings(fsdp_plugin, cfg.train.mixed_precision, print if self.is_main else None)
        _check_writable(self.output_dir, create=self.is_main)  # only rank 0 writes to the run folder
        checkpoint = self._find_checkpoint(resume)

        self.prompts = config_prompts(cfg.prompts)
        # memory.budget: the plan chooses h, checkpointing and frame chunks of the estimator
        parts = build_components(
            cfg,
            acc.device,
            processes=self.world,
            log=print if self.is_main else None,
            plan_dir=self.output_dir if self.is_main else None,
        )
        self.model, self.estimator, self.plan = parts.backbone, parts.estimator, parts.plan
        self.backbone = for_prompts(self.model, self.prompts)  # multi-scale prompts: a stage per third
        self.params = self.model.trainable_parameters()
        broadcast_parameters(self.params)
        self.baseline = PromptBaseline(cfg.train.baseline_window) if cfg.train.prompt_baseline else None
        self.reward = FinalPromptReward(parts.reward)
        self.memory = parts.apply_memory(self.backbone, self.reward)
        # train.eval: held-out prompts and rewards, and the training reward on them
        self.heldout = HeldOutEvaluation(cfg.train.eval, parts.reward) if cfg.train.eval is not None else None
        self._shard(cfg.train.sharding)  # after planning: the cost model reads the whole model
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            self.params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps
        )
        # An estimator that reuses a sampled batch (PPO's inner epochs) must see the same prompts,
        # so the stream advances once per reuse cycle.
        self._reuse = getattr(self.estimator, "updates_per_batch", 1)
        self.step = 0
        self.position = 0  # global micro-batches consumed: the prompt stream's position / B
        if checkpoint is not None:
            self._load(checkpoint)
            if self.is_main:
                print(f"resuming from {checkpoint} (step {self.step})")
        self.metrics = MetricsWriter(self.output_dir, self.step if checkpoint else None) if self.is_main else None
        if self.is_main:
            (self.output_dir / "config.yaml").write_text(config_yaml(cfg), encoding="utf-8")
        if cfg.train.log_with:
            acc.init_trackers(cfg.train.project, config=_flat_scalars(cfg.to_dict()))

    def _shard(self, sharding: str) -> None:
        """``train.sharding=fsdp``: shard the denoiser's frozen weights over the processes."""
        if sharding != "fsdp":
            return
        if self.world == 1:
            if self.is_main:
                print("train.sharding=fsdp: one process, nothing to shard")
            return
        shard_denoiser(self.model, self.shard_settings)

    # ------------------------------------------------------------------ resume

    def _find_checkpoint(self, resume: str | Path | None) -> Path | None:
        existing = ckpt.latest_checkpoint(self.output_dir)
        if resume is None:
            if existing is not None:
                raise FileExistsError(
                    f"{self.output_dir} already holds checkpoints (latest {existing.name}): "
                    "pass --resume to continue that run, or set train.output_dir to a new folder"
                )
            return None
        if str(resume) == "auto":
            if existing is None and self.is_main:
                warnings.warn(f"--resume: no checkpoint in {self.output_dir}; starting fresh", stacklevel=2)
            return existing
        path = Path(resume)
        if not (path / ckpt.STATE_FILE).is_file():
            raise FileNotFoundError(f"--resume {path}: not a checkpoint folder (no {ckpt.STATE_FILE})")
        return path

    def _load(self, checkpoint: Path) -> None:
        state = ckpt.load_state(checkpoint)
        changed = [k for k in _diff_keys(state["config"], self.config.to_dict()) if k not in RESUMABLE_CHANGES]
        if changed and self.is_main:
            warnings.warn(f"resuming {checkpoint} with a changed config: {', '.join(changed)}", stacklevel=2)
        try:
            load_weights(self.model, ckpt.weights_dir(checkpoint))
        except ValueError as err:  # corrupt, or saved from another model
            raise ckpt.CheckpointError(f"--resume {checkpoint}: {err}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.position = state["step"], state["prompt_position"]
        if self.baseline is not None and state["baseline"] is not None:
            self.baseline.load_state_dict(state["baseline"])
        per_process = state["per_process"]
        if len(per_process) != self.world and self.is_main:
            warnings.warn(
                f"resuming a {len(per_process)}-process run with {self.world} processes: estimator "
                "state and RNG states of process 0 are used everywhere",
                stacklevel=2,
            )
        mine = per_process[self.rank] if len(per_process) == self.world else per_process[0]
        # accelerate names a CPU process's device "cpu:0", which torch.load cannot map to
        device = "cpu" if self.accelerator.device.type == "cpu" else self.accelerator.device
        mine = ckpt.load_pickled(io.BytesIO(mine), checkpoint / ckpt.STATE_FILE, device)
        if hasattr(self.estimator, "load_state_dict"):
            self.estimator.load_state_dict(mine["estimator"])
        set_rng_state(mine["rng"])

    def _save(self) -> Path | None:
        # Each process's own state (its estimator's running statistics, its RNGs) travels to
        # the main process serialised by torch.save, which handles tensors on any device.
        buffer = io.BytesIO()
        state = self.estimator.state_dict() if hasattr(self.estimator, "state_dict") else {}
        mine = {"estimator": state, "rng": rng_state()}
        torch.save(mine, buffer)
        per_process = gather_objects(buffer.getvalue())  # every process takes part
        path = None
        if self.is_main:
            state = {
                "step": self.step,
                "prompt_position": self.position,  # global micro-batches consumed
                "optimizer": self.optimizer.state_dict(),
                "baseline": self.baseline.state_dict() if self.baseline else None,
                "per_process": per_process,
                "world_size": self.world,
                "config": self.config.to_dict(),
            }
            path = ckpt.save_checkpoint(
                self.output_dir,
                self.step,
                state,
                lambda d: save_weights(self.model, d),
                config_yaml(self.config),
                self.config.train.keep_last,
            )
        self.accelerator.wait_for_everyone()
        return path

    # ------------------------------------------------------------------ one step

    def _micro_batch(self, k: int) -> dict[str, Any]:
        t = self.config.train
        g = self.position + k * self.world + self.rank
        group = t.group_size  # videos per prompt: each of batch_size / group prompts group times
        n = t.batch_size // group
        distinct = prompts_at(self.prompts, g * n, n, t.seed, self.config.prompts.shuffle)
        prompts = [p for p in distinct for _ in range(group)]
        generator = torch.Generator().manual_seed(derive_seed(t.seed, "micro", g))
        torch.manual_seed(derive_seed(t.seed, "torch", g))  # dropout and other global draws
        for p in self.params:
            p.grad = None
        offset = self.baseline(prompts) if self.baseline is not None else None  # per-prompt running mean
        with self.accelerator.autocast():
            estimate = self.estimator.estimate(self.backbone, self.reward, prompts, generator, reward_offset=offset)
        grads = [p.grad for p in self.params]
        raw = (estimate.rewards.tolist(), {n: v.tolist() for n, v in estimate.terms.items()})
        return {
            "prompts": prompts,
            "stats": estimate.stats,
            "skipped": estimate.skipped,
            "grads": grads,
            "raw": raw,
            "fresh": estimate.fresh,  # False: a reused batch, whose rewards were counted when sampled
        }

    def train_step(self) -> dict[str, Any]:
        """One optimizer update; returns the step's metrics record."""
        t = self.config.train
        start = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        micro = [self._micro_batch(k) for k in range(t.grad_accum)]

        total = [torch.zeros_like(p) for p in self.params]
        for m in micro:
            for acc, g in zip(total, m["grads"], strict=True):
                if g is not None:
                    acc.add_(g)
        local_bad = any(m["skipped"] for m in micro) or any(not math.isfinite(x) for m in micro for x in m["raw"][0])
        summary = gather_objects(
            {
                "bad": local_bad,
                "prompts": [p for m in micro if m["fresh"] for p in m["prompts"]],
                "rewards": [r for m in micro if m["fresh"] for r in m["raw"][0]],
                "all_rewards": [r for m in micro for r in m["raw"][0]],
                "terms": [m["raw"][1] for m in micro],
                "stats": [m["stats"] for m in micro],
            }
        )
        all_reduce_sum(total)
        for acc in total:
            acc.div_(t.grad_accum * self.world)
        for p, g in zip(self.params, total, strict=True):
            p.grad = g
        self.on_gradients(self.step)
        grad_norm = _global_norm(total)
        skipped = any(s["bad"] for s in summary) or not math.isfinite(grad_norm)
        if not skipped:
            if self.config.optim.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.config.optim.max_grad_norm)
            self.optimizer.step()
            if self.baseline is not None:
                self.baseline.update(
                    [p for s in summary for p in s["prompts"]], [r for s in summary for r in s["rewards"]]
                )
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.step % self._reuse == 0:
            self.position += t.grad_accum * self.world
        return self._record(summary, grad_norm, skipped, time.perf_counter() - start)

    def _record(self, summary: list[dict], grad_norm: float, skipped: bool, seconds: float) -> dict[str, Any]:
        t = self.config.train
        rewards = [r for s in summary for r in s["all_rewards"] if math.isfinite(r)]
        record: dict[str, Any] = {
            "step": self.step,
            "samples": self.position * t.batch_size,
            "skipped": float(skipped),
            "reward_mean": sum(rewards) / len(rewards) if rewards else float("nan"),
            "reward_std": _std(rewards),
            "grad_norm": grad_norm,
            "lr": self.optimizer.param_groups[0]["lr"],
            "step_time": seconds,
            "peak_mem_mb": _peak_memory_mb(),
        }
        terms: dict[str, list[float]] = {}
        for s in summary:
            for micro_terms in s["terms"]:
                for name, values in micro_terms.items():
                    terms.setdefault(name, []).extend(v for v in values if math.isfinite(v))
        if len(terms) > 1:
            record.update({f"reward/{n}": sum(v) / len(v) if v else float("nan") for n, v in terms.items()})
        stats: dict[str, list[float]] = {}
        for s in summary:
            for micro_stats in s["stats"]:
                for key, value in micro_stats.items():
                    if key != "grad_norm":
                        stats.setdefault(key, []).append(float(value))
        for key, values in stats.items():
            record[key] = sum(values) if key in SUMMED_STATS else sum(values) / len(values)
        return record

    # ------------------------------------------------------------------ loop

    def train(self) -> list[dict[str, Any]]:
        """Run until ``train.steps``; returns the records of the steps run here."""
        from tqdm.auto import tqdm

        t = self.config.train
        records = []
        done = self.step >= t.steps
        if done and self.is_main:
            print(f"{self.output_dir}: already at step {self.step} of train.steps={t.steps}; raise it to go on")
        if self.heldout is not None and self.step == 0 and not done:  # the base model: what the guard compares with
            self._log({"step": 0, "samples": 0, **self.evaluate()})
        bar = tqdm(total=t.steps, initial=self.step, disable=done or not (self.is_main and t.progress), desc="train")
        while self.step < t.steps:
            record = self.train_step()
            if self.heldout is not None and self.heldout.due(self.step, t.steps):
                record.update(self.evaluate())
            records.append(record)
            self._log(record)
            if self.is_main:
                note = " (skipped: non-finite reward)" if record["skipped"] else ""
                bar.set_postfix_str(f"reward {record['reward_mean']:.4f}, {record['step_time']:.2f} s/step{note}")
                bar.update(1)
            if self.step % t.checkpoint_every == 0 or self.step == t.steps:
                self._save()
            self.on_step_end(self.step, record)
        bar.close()
        if self.is_main:
            plot_reward_curve(self.metrics.path, self.output_dir / CURVE_FILE)
            print(run_summary(self.output_dir, self.imports))
        if t.log_with:
            self.accelerator.end_training()
        return records

    def evaluate(self) -> dict[str, float]:
        """The held-out means of the current weights (``train.eval``), computed by all processes
        together; it draws nothing from the training random streams."""
        start = time.perf_counter()
        values = self.heldout.run(
            self.model,
            self.accelerator.device,
            self.world,
            self.rank,
            collective_forward=self.config.train.sharding == "fsdp" and self.world > 1,
            autocast=self.accelerator.autocast,
        )
        return {**values, "eval_time": time.perf_counter() - start}

    def _log(self, record: dict[str, Any]) -> None:
        """The main process appends ``record`` to metrics.jsonl and the trackers."""
        if not self.is_main:
            return
        self.metrics.write(record)
        if self.config.train.log_with:
            self.accelerator.log(_numeric(record), step=record["step"])

    def on_gradients(self, step: int) -> None:
        """Hook: ``p.grad`` holds this update's global mean gradient (before clipping)."""

    def on_step_end(self, step: int, record: dict[str, Any]) -> None:
        """Hook: after step ``step``'s metrics (and checkpoint, if one was due)."""


def train(config: Config, resume: str | Path | None = None, imports: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Build a ``Trainer`` and run it to the end."""
    return Trainer(config, resume, imports).train()


# ---------------------------------------------------------------------- helpers


class LaunchError(RuntimeError):
    """A launch that would not run what was asked for (see ``_check_launch``)."""


def _check_launch() -> None:
    """Refuse the one launch that silently trains with a single process.

    ``accelerate launch --cpu --num_processes N`` (accelerate 1.x) starts N processes only
    through mpirun (``--mpirun_hostfile``); otherwise it starts one, leaving MASTER_ADDR set
    and no WORLD_SIZE, and the run would quietly use 1/N of the intended batch.
    """
    env = os.environ
    ranks = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    if (
        env.get("ACCELERATE_USE_CPU", "").lower() == "true"
        and "MASTER_ADDR" in env
        and not any(k in env for k in ranks)
    ):
        raise LaunchError(
            "`accelerate launch --cpu --num_processes N` started a single process (it needs mpirun for more). "
            "For N CPU processes use `accelerate launch --multi_gpu --num_processes N -m rlr_video train ...` "
            "(without a GPU the trainer forms a gloo CPU group) or `torchrun --nproc_per_node N -m rlr_video train ...`"
        )


def _check_writable(folder: Path, create: bool = True) -> None:
    """Raise a ``ConfigError`` naming ``train.output_dir`` unless ``folder`` can be created and
    written: checked before the model loads, not at the first checkpoint minutes later.
    ``create=False`` (the other ranks) only asks the file system, writing nothing."""
    allowed = "a folder that can be created and written ({})"
    if not create:
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError("train.output_dir", str(folder), allowed.format(f"{existing} is not writable"))
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError("train.output_dir", str(folder), allowed.format(err.strerror or err)) from None


def config_yaml(cfg: Config) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(cfg.to_dict()))


def _global_norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _numeric(record: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}


def _flat_scalars(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_scalars(value, f"{name}."))
        elif isinstance(value, int | float | str | bool):
            out[name] = value
        elif value is not None:
            out[name] = str(value)
    return out


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]
