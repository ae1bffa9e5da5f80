"""Speed side by side on CPU-sized real diffusers models: ratios measured in one run.

For every family of ``tools/speed/speed_models.py`` (random-weight pipelines of the real diffusers
classes, saved with ``save_pretrained`` and loaded the way users load them):

- ``rollout``: prompt encoding + chain + decode against the family's diffusers pipeline at the
  same steps, guidance and initial latents (eta / noise level 0, so the videos must be equal:
  their largest difference is recorded). Throughput ratio = pipeline seconds / ours (target
  >= 0.95), without LoRA (the same model) and with the LoRA training samples with.
- ``estimators``: each estimator's update time and peak memory over truncated backprop K = 1
  (target for RLR h = 2 with ``param_es``: <= 1.5x). Peaks from ``measure_peak`` (the CPU tensor
  tracker), in separate runs from the timed ones.
- ``growth``: RLR (h = 2, ``param_es``) over frames (8, 16, 32 or the nearest counts a causal VAE
  takes) and over h (1 ... 4): measured time and peak against the planner's prediction
  (``Planner.estimate``: bytes of the update, forward-call equivalents for time).
- ``profile``: where the time of one update goes (``tools/speed/speed_profile.py``: denoiser calls,
  decode, reward, text encoder, the rest), for truncated BP K = 1 and RLR.
- ``sizes`` (``--sweep FAMILY``): the same profile over the denoiser's width and depth: the share
  of denoiser calls against the model's size, and the RLR / truncated BP time ratio with it.

Timings are interleaved: every repetition runs each variant once, in alternating order, after a
warm-up round; a figure is the ratio of the fastest repetitions (``--reps``, at least 5), with
the median of the per-repetition ratios next to it. This machine is shared: absolute seconds
mean nothing, only ratios from the same run do.

    python tools/bench_speed.py                               # everything, benchmarks/speed.json
    python tools/bench_speed.py --families wan --sections rollout estimators
    python tools/bench_speed.py --estimators "rlr(h=2, param_es)" --reps 7
    python tools/bench_speed.py --quick --out /tmp/speed.json # a smoke run (2 reps, 4 steps)

Resumable: each (family, section) is written to ``--out`` when done and skipped on the next run
if its settings are unchanged (``--force`` measures again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools" / "speed"))  # its helper modules
sys.path.insert(0, str(ROOT / "tests"))  # the tiny reward builders live with the tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import speed_models  # noqa: E402
import speed_profile  # noqa: E402

PROMPTS = ["a red circle moving left", "a blue square moving up"]
NEGATIVE = "blurry"
GUIDANCE = 4.0
LORA_RANK = 4
NOTE = (
    "Measured on a shared 2-core CPU machine with other jobs running: absolute seconds vary 2-10x "
    "between runs and mean nothing. Only the ratios are figures: each compares variants timed in "
    "the same run, interleaved repetition by repetition (ratio of the fastest repetitions; the "
    "median of per-repetition ratios next to it)."
)


@dataclasses.dataclass(frozen=True)
class EstimatorEntry:
    """One estimator as the benchmark runs it: its registered name and config keys; ``grouped``:
    the batch is one prompt's group (GRPO-style estimators need ``train.group_size`` videos of a
    prompt)."""

    name: str
    keys: dict = dataclasses.field(default_factory=dict)
    grouped: bool = False

    def build(self, steps: int, batch: int):
        from rlr_video.estimators.registry import RunContext, config_class

        group = batch if self.grouped else 1
        run = RunContext(num_steps=steps, batch_size=batch, group_size=group)
        config = config_class(self.name)(name=self.name, **self.keys)
        config.validate(run)
        return config.build(run)

    def prompts(self, batch: int) -> list[str]:
        return [PROMPTS[0]] * batch if self.grouped else [PROMPTS[i % len(PROMPTS)] for i in range(batch)]


BASELINE = "truncated_bp(K=1)"
TARGET = "rlr(h=2, param_es)"
ESTIMATORS: dict[str, EstimatorEntry] = {
    BASELINE: EstimatorEntry("truncated_bp", {"K": 1}),
    TARGET: EstimatorEntry("rlr", {"h": 2, "zo": "param_es"}),
    "rlr(h=2, latent_lr x1)": EstimatorEntry("rlr", {"h": 2, "zo": "latent_lr", "zo_samples": 1}),
    "rlr(h=2, latent_lr all)": EstimatorEntry("rlr", {"h": 2, "zo": "latent_lr"}),
    "lr (DDPO)": EstimatorEntry("lr"),
    "full_bp": EstimatorEntry("full_bp"),
    "grpo": EstimatorEntry("grpo", grouped=True),
    "nft": EstimatorEntry("nft", grouped=True),
}
TARGETS = {"rollout_throughput_min": 0.95, "rlr_h2_param_es_time_max": 1.5}


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, log, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each variant per repetition: each repetition runs every variant once, the
    order reversed every other repetition; ``warmup`` rounds first, not recorded."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(warmup + reps):
        for k in names if r % 2 == 0 else names[::-1]:
            seconds = timed(fns[k])
            if r >= warmup:
                times[k].append(seconds)
        if r >= warmup:
            log(f"    rep {r - warmup + 1}: " + "  ".join(f"{k} {times[k][-1]:.2f}s" for k in names))
    return times


def ratio(times: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    """num / den: of the fastest repetitions, and the median of the per-repetition ratios."""
    paired = [a / b for a, b in zip(times[num], times[den])]
    return {"ratio": min(times[num]) / min(times[den]), "median_paired": statistics.median(paired)}


def summary(seconds: list[float]) -> dict[str, float]:
    return {"min_s": min(seconds), "median_s": statistics.median(seconds), "reps": len(seconds)}


# --------------------------------------------------------------------------- models and rewards


class Models:
    """The families' CPU-sized pipelines, built once per process into a temporary folder."""

    def __init__(self, root: Path):
        self.root = root
        self.built: dict[tuple[str, int, int], Path] = {}

    def path(self, family: str, width: int | None = None, depth: int | None = None) -> Path:
        fam = speed_models.FAMILIES[family]
        key = (family, width or fam.width, depth or fam.depth)
        if key not in self.built:
            self.built[key] = fam.build(self.root / f"{family}-{key[1]}x{key[2]}", key[1], key[2])
        return self.built[key]

    def backbone(self, family: str, steps: int, frames: int | None = None, width=None, depth=None, **options):
        from rlr_video.backbones import load_backbone

        fam = speed_models.FAMILIES[family]
        settings = dict(num_steps=steps, guidance_scale=GUIDANCE, lora_rank=LORA_RANK)
        if fam.negative_prompt:
            settings["negative_prompt"] = NEGATIVE
        settings.update(options)
        if frames is not None:
            settings["num_frames"] = frames
        torch.manual_seed(0)  # the LoRA's initialisation
        return load_backbone(self.path(family, width, depth), family=family, **fam.options(**settings))


def build_reward():
    """The aesthetic reward (open_clip image tower + the LAION MLP head) at the test suite's tiny
    size, random weights: a real reward's code path, cheap next to the denoiser."""
    import reward_fixtures as rf

    from rewards import build_reward as build

    rf.register_tiny_open_clip()
    spec = {"model": rf.TINY_768, "pretrained": rf.open_clip_weights(rf.TINY_768), "head": rf.aesthetic_head()}
    return build({"aesthetic": spec})


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_free_count(backbone) -> int:
    trainable = {id(p) for p in backbone.trainable_parameters()}
    return sum(p.numel() for p in backbone.denoiser.parameters() if id(p) not in trainable)


def update_fn(estimator, backbone, reward, prompts: list[str], seed: int = 0) -> Callable[[], Any]:
    params = backbone.trainable_parameters()

    def run():
        for p in params:
            p.grad = None
        return estimator.estimate(backbone, reward, prompts, torch.Generator().manual_seed(seed))

    return run


# --------------------------------------------------------------------------- sections


def section_rollout(models: Models, family: str, cfg: argparse.Namespace, log) -> dict:
    """Ours (encode + rollout + decode) against the family's pipeline, same latents and output."""
    import diffusers

    from rlr_video.chain import rollout

    fam = speed_models.FAMILIES[family]
    pipe = getattr(diffusers, fam.pipeline).from_pretrained(models.path(family))
    pipe.set_progress_bar_config(disable=True)
    if fam.prepare is not None:
        fam.prepare(pipe)
    ours = models.backbone(family, cfg.steps, eta=0.0, lora_rank=0)
    ours_lora = models.backbone(family, cfg.steps, eta=0.0)
    batch = len(PROMPTS)
    x_T = ours.initial_latents(batch, torch.Generator().manual_seed(0))

    def run_ours(backbone):
        def run():
            with torch.no_grad():
                cond = backbone.encode(PROMPTS)
                traj = rollout(backbone, cond, torch.Generator().manual_seed(0), batch)
                return backbone.decode(traj.sample)

        return run

    def run_pipe():
        return pipe(
            PROMPTS,
            num_inference_steps=cfg.steps,
            latents=fam.pipeline_latents(x_T.clone()),
            **fam.guidance_kwargs(pipe, GUIDANCE, [NEGATIVE] * batch),
            output_type="pt",
            **fam.pipeline_kwargs(),
        ).frames

    ours_frames, pipe_frames, lora_frames = run_ours(ours)(), run_pipe(), run_ours(ours_lora)()
    diff = float((ours_frames - pipe_frames).abs().max())
    diff_lora = float((lora_frames - pipe_frames).abs().max())
    # the parity tests' tolerance (tests/test_backbones_parity.py): a relative L2 norm from the
    # layers on the path (the LoRA starts at zero, so the video with it is the pipeline's too)
    rel = {
        k: float((v - pipe_frames).norm() / pipe_frames.norm())
        for k, v in (("ours", ours_frames), ("ours+lora", lora_frames))
    }
    allowed = speed_models.fx.chain_rtol(ours)
    log(
        f"  parity: max |ours - pipeline| {diff:.3g} (with LoRA {diff_lora:.3g}); relative "
        + ", ".join(f"{k} {v:.3g}" for k, v in rel.items())
        + f" ({allowed:.3g} allowed)"
    )
    times = interleaved({"pipeline": run_pipe, "ours": run_ours(ours), "ours+lora": run_ours(ours_lora)}, cfg.reps, log)
    throughput = ratio(times, "pipeline", "ours")
    with_lora = ratio(times, "pipeline", "ours+lora")
    result = {
        "pipeline": fam.pipeline,
        "max_abs_diff": diff,
        "max_abs_diff_lora": diff_lora,
        "rel_l2_diff": rel,
        "rel_l2_allowed": allowed,
        "same_output": max(rel.values()) <= allowed,
        "seconds": {k: summary(v) for k, v in times.items()},
        "throughput": throughput,
        "throughput_with_lora": with_lora,
        "target": TARGETS["rollout_throughput_min"],
        "met": throughput["ratio"] >= TARGETS["rollout_throughput_min"],
    }
    log(
        f"  rollout throughput vs {fam.pipeline}: {throughput['ratio']:.3f}x "
        f"(median {throughput['median_paired']:.3f}), with LoRA {with_lora['ratio']:.3f}x"
    )
    return result


def available(names: list[str]) -> tuple[list[str], dict[str, str]]:
    from rlr_video.estimators.registry import available_estimators

    known = set(available_estimators())
    kept = [n for n in names if ESTIMATORS[n].name in known]
    skipped = {n: f"estimator {ESTIMATORS[n].name!r} is not registered here" for n in names if n not in kept}
    return kept, skipped


def section_estimators(models: Models, family: str, cfg: argparse.Namespace, log) -> dict:
    """Each estimator's update time and peak over truncated BP K = 1's."""
    from rlr_video.memory.probe import measure_peak

    names, skipped = available([BASELINE, *[n for n in cfg.estimators if n != BASELINE]])
    backbone = models.backbone(family, cfg.steps)
    reward = build_reward()
    batch = len(PROMPTS)
    runs, stats = {}, {}
    for name in names:
        entry = ESTIMATORS[name]
        runs[name] = update_fn(entry.build(cfg.steps, batch), backbone, reward, entry.prompts(batch))
    times = interleaved(runs, cfg.reps, log)  # its warm-up round also warms the tracked runs below
    peaks = {}
    for name, run in runs.items():
        result: list = []
        peaks[name] = measure_peak(lambda run=run, result=result: result.append(run()), "cpu").peak
        stats[name] = result[0].stats
        log(f"  {name:26} peak {peaks[name] / 2**20:8.1f} MiB")
    out = {}
    for name in names:
        s = stats[name]
        out[name] = {
            "config": {"name": ESTIMATORS[name].name, **ESTIMATORS[name].keys},
            "seconds": summary(times[name]),
            "time_over_truncated_bp": ratio(times, name, BASELINE),
            "peak_bytes": peaks[name],
            "peak_over_truncated_bp": peaks[name] / peaks[BASELINE],
            "calls_forward": s.get("calls_forward"),
            "calls_backward": s.get("calls_backward"),
        }
        r = out[name]["time_over_truncated_bp"]
        peak = out[name]["peak_over_truncated_bp"]
        log(f"  {name:26} time {r['ratio']:.3f}x (median {r['median_paired']:.3f})  peak {peak:.2f}x")
    result = {"estimators": out, "skipped": skipped}
    if TARGET in out:
        value = out[TARGET]["time_over_truncated_bp"]["ratio"]
        result["target"] = {
            "name": TARGET,
            "max": TARGETS["rlr_h2_param_es_time_max"],
            "value": value,
            "met": value <= TARGETS["rlr_h2_param_es_time_max"],
        }
    return result


def section_growth(models: Models, family: str, cfg: argparse.Namespace, log) -> dict:
    """RLR's time and peak over frames (h = 2) and over h (default frames), against the planner."""
    from rlr_video.estimators import RLR
    from rlr_video.memory.cost_model import CostModel
    from rlr_video.memory.planner import Planner
    from rlr_video.memory.probe import measure_peak
    from rlr_video.memory.recompute import MemoryOptions

    fam = speed_models.FAMILIES[family]
    steps, batch, zo = cfg.growth_steps, len(PROMPTS), "param_es"
    reward = build_reward()
    variants = [(f, 2) for f in fam.frames_sweep] + [(fam.frames_sweep[0], h) for h in (1, 3, 4)]
    backbones = {f: models.backbone(family, steps, frames=f) for f in fam.frames_sweep}
    runs, planned = {}, {}
    for frames, h in variants:
        backbone = backbones[frames]
        label = f"F={frames}, h={h}"
        runs[label] = update_fn(RLR(h=h, zo=zo), backbone, reward, PROMPTS)
        planned[label] = Planner(CostModel(backbone, reward), batch=batch, zo=zo).estimate(h, MemoryOptions())
    times = interleaved(runs, cfg.reps, log)  # its warm-up round also warms the tracked runs below
    rows = []
    for (frames, h), (label, est) in zip(variants, planned.items()):
        measured = measure_peak(runs[label], "cpu").peak
        error = est.update / measured - 1
        rows.append(
            {
                "frames": frames,
                "h": h,
                "measured_peak": measured,
                "predicted_peak": est.update,
                "prediction_error": error,
                "predicted_forwards": est.forwards,
                "label": label,
            }
        )
        log(f"  {label:12} peak {measured / 2**20:8.1f} MiB, predicted {est.update / 2**20:8.1f} MiB ({error:+.1%})")
    smallest = fam.frames_sweep[0]
    refs = {"over_h1": f"F={smallest}, h=1", "over_smallest_frames": f"F={smallest}, h=2"}
    by_label = {r["label"]: r for r in rows}
    for row in rows:
        row["seconds"] = summary(times[row["label"]])
        for key, ref in refs.items():
            if (key == "over_h1" and row["frames"] != smallest) or (key == "over_smallest_frames" and row["h"] != 2):
                continue
            base = by_label[ref]
            row[key] = {
                "time": ratio(times, row["label"], ref),
                "predicted_time": row["predicted_forwards"] / base["predicted_forwards"],
                "peak": row["measured_peak"] / base["measured_peak"],
                "predicted_peak": row["predicted_peak"] / base["predicted_peak"],
            }
    for row in rows:
        del row["label"]
    return {
        "steps": steps,
        "zo": zo,
        "note": (
            "over_h1: against h = 1 at the smallest frame count; over_smallest_frames: against the "
            "smallest frame count at h = 2. The planner's time model is forward-call equivalents "
            "(Planner.forwards), which does not depend on the frame count."
        ),
        "rows": rows,
    }


def _profile_pair(models: Models, family: str, steps: int, log, width=None, depth=None) -> dict:
    backbone = models.backbone(family, steps, width=width, depth=depth)
    reward = build_reward()
    out = {}
    params = backbone.trainable_parameters()
    for name in (BASELINE, TARGET):
        entry = ESTIMATORS[name]
        estimator = entry.build(steps, len(PROMPTS))

        def run(r, estimator=estimator, entry=entry):
            for p in params:
                p.grad = None
            return estimator.estimate(backbone, r, entry.prompts(len(PROMPTS)), torch.Generator().manual_seed(0))

        run(reward)  # warm-up
        parts, _ = speed_profile.profile_update(run, backbone, reward)
        total = parts["total"]
        out[name] = {"seconds": parts, "share": {k: v / total for k, v in parts.items() if k != "total"}}
        log(f"  {name:22} " + "  ".join(f"{k} {v:.0%}" for k, v in out[name]["share"].items()))
    out["denoiser_params"] = lora_free_count(backbone)
    return out


def section_profile(models: Models, family: str, cfg: argparse.Namespace, log) -> dict:
    return _profile_pair(models, family, cfg.steps, log)


def section_sizes(models: Models, family: str, cfg: argparse.Namespace, log) -> dict:
    """The profile over the denoiser's (width, depth): the denoiser's share against its size."""
    rows = []
    for width, depth in cfg.sizes:
        log(f"  width {width}, depth {depth}")
        prof = _profile_pair(models, family, cfg.steps, log, width, depth)
        rows.append(
            {
                "width": width,
                "depth": depth,
                "denoiser_params": prof["denoiser_params"],
                "denoiser_share": {k: prof[k]["share"]["denoiser"] for k in (BASELINE, TARGET)},
                "shares": {k: prof[k]["share"] for k in (BASELINE, TARGET)},
                # one profiled run each: a rough ratio (profiler overhead included)
                "rlr_over_truncated_bp_profiled": prof[TARGET]["seconds"]["total"] / prof[BASELINE]["seconds"]["total"],
            }
        )
    dominant = [r for r in rows if r["denoiser_share"][BASELINE] > 0.5]
    return {
        "family": family,
        "rows": rows,
        "denoiser_dominates_from": (
            {
                "width": dominant[0]["width"],
                "depth": dominant[0]["depth"],
                "denoiser_params": dominant[0]["denoiser_params"],
            }
            if dominant
            else None
        ),
    }


SECTIONS = {
    "rollout": section_rollout,
    "estimators": section_estimators,
    "growth": section_growth,
    "profile": section_profile,
}


# --------------------------------------------------------------------------- driver


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }


def settings(cfg: argparse.Namespace, section: str, family: str) -> dict:
    """What a stored result depends on: a change measures it again."""
    fam = speed_models.FAMILIES[family]
    base = {"steps": cfg.steps, "reps": cfg.reps, "width": fam.width, "depth": fam.depth, "frames": fam.frames}
    if section == "estimators":
        base["estimators"] = sorted(cfg.estimators)
    if section == "growth":
        base["growth_steps"] = cfg.growth_steps
    if section == "sizes":
        base["sizes"] = [list(s) for s in cfg.sizes]
    return base


def load(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {}


def save(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


def parse_size(text: str) -> tuple[int, int]:
    width, depth = text.lower().split("x")
    return int(width), int(depth)


def main(argv: list[str] | None = None) -> int:
    families = list(speed_models.FAMILIES)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--families", nargs="*", default=list(speed_models.FAMILIES), choices=list(speed_models.FAMILIES)
    )
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--estimators", nargs="*", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    parser.add_argument("--steps", type=int, default=10, help="chain steps T (default 10)")
    parser.add_argument("--growth-steps", type=int, default=6, help="T of the growth section (h = 4 needs 5)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (at least 5 for a figure)")
    parser.add_argument("--sweep", default=None, choices=families, help="the size sweep's family")
    parser.add_argument(
        "--sizes", nargs="*", type=parse_size, default=None, help="WIDTHxDEPTH of the sweep (default: the family's)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 reps, 4 steps (not a figure)")
    parser.add_argument("--force", action="store_true", help="measure again what --out already holds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "speed.json")
    cfg = parser.parse_args(argv)
    if cfg.quick:
        cfg.reps, cfg.steps, cfg.growth_steps = 2, 4, 5
    elif cfg.reps < 5:
        parser.error("--reps must be at least 5 for a figure (--quick for a smoke run)")
    if cfg.sweep and not cfg.sizes:
        cfg.sizes = speed_models.SWEEPS[cfg.sweep]
    torch.set_num_threads(cfg.threads)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()

    def log(line: str) -> None:
        print(line, flush=True)

    report = load(cfg.out)
    report.update(
        note=NOTE,
        setup={
            "steps": cfg.steps,
            "batch": len(PROMPTS),
            "guidance_scale": GUIDANCE,
            "lora_rank": LORA_RANK,
            "reward": "aesthetic (open_clip tower + LAION MLP head, tiny random weights)",
            "reps": cfg.reps,
            "warmup_rounds": 1,
            "threads": cfg.threads,
            "quick": cfg.quick,
        },
        targets=TARGETS,
    )
    report.setdefault("runs", []).append({"command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]), **machine()})
    families = report.setdefault("families", {})
    with tempfile.TemporaryDirectory(prefix="rlr-speed-") as root:
        models = Models(Path(root))
        for family in cfg.families:
            fam = speed_models.FAMILIES[family]
            entry = families.setdefault(family, {})
            for section in cfg.sections:
                wanted = settings(cfg, section, family)
                if not cfg.force and entry.get(section, {}).get("settings") == wanted:
                    log(f"{family} {section}: stored, skipped")
                    continue
                log(f"{family} {section}")
                start = time.perf_counter()
                result = SECTIONS[section](models, family, cfg, log)
                result["settings"] = wanted
                result["wall_s"] = time.perf_counter() - start
                result["load_average"] = os.getloadavg()
                entry[section] = result
                entry.setdefault(
                    "model",
                    {
                        "width": fam.width,
                        "depth": fam.depth,
                        "video": [fam.frames, fam.height, fam.width_px],
                        "denoiser_params": param_count(models.backbone(family, 2, lora_rank=0).denoiser),
                    },
                )
                save(cfg.out, report)
        if cfg.sweep:
            wanted = settings(cfg, "sizes", cfg.sweep)
            stored = report.get("sizes", {})
            if cfg.force or stored.get("settings") != wanted or stored.get("family") != cfg.sweep:
                log(f"{cfg.sweep} sizes")
                result = section_sizes(models, cfg.sweep, cfg, log)
                result["settings"] = wanted
                report["sizes"] = result
                save(cfg.out, report)
    report["summary"] = summarise(report)
    save(cfg.out, report)
    log(json.dumps(report["summary"], indent=2))
    return 0


def summarise(report: dict) -> dict:
    out: dict[str, Any] = {}
    for family, entry in report.get("families", {}).items():
        row: dict[str, Any] = {}
        if "rollout" in entry:
            r = entry["rollout"]
            row["rollout_throughput"] = r["throughput"]["ratio"]
            row["rollout_met"] = r["met"]
            row["rollout_same_output"] = r["same_output"]
        if "estimators" in entry:
            e = entry["estimators"]
            row["time_over_truncated_bp"] = {
                k: v["time_over_truncated_bp"]["ratio"] for k, v in e["estimators"].items()
            }
            row["peak_over_truncated_bp"] = {k: v["peak_over_truncated_bp"] for k, v in e["estimators"].items()}
            if "target" in e:
                row["rlr_h2_param_es_met"] = e["target"]["met"]
        if "growth" in entry:
            errors = [abs(r["prediction_error"]) for r in entry["growth"]["rows"]]
            row["growth_max_abs_prediction_error"] = max(errors)
        if "profile" in entry:
            row["denoiser_share"] = {k: entry["profile"][k]["share"]["denoiser"] for k in (BASELINE, TARGET)}
        out[family] = row
    if "sizes" in report:
        out["sizes"] = report["sizes"].get("denoiser_dominates_from")
    return out


if __name__ == "__main__":
    sys.exit(main())
