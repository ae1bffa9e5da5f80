"""``tools/bench_head_to_head.py``: the budgets, the tuning, the extra seeds of the two best, resuming,
and the issue's verdict, end to end on the toy preset (a fraction of a second per update) and on
hand-made curves."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tolerances import EPS64, sum_atol

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "bench_head_to_head.py"
SMALL = [
    "--tasks", "toy", "--methods", "rlr", "truncated_bp", "lr_ppo", "--samples", "8", "--eval-every", "4",
    "--tune-samples", "4", "--seeds", "0", "1", "--extra-seeds", "2", "--lrs", "1e-3", "3e-3", "--eval-videos", "4",
]  # fmt: skip


def _tool():
    spec = importlib.util.spec_from_file_location("bench_head_to_head", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    paths = ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "h2h.json"), "--plot", str(tmp_path / "h2h.png")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, str(TOOL), *SMALL, *paths, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


def test_every_method_meets_both_budgets_after_tuning_and_a_resume_redoes_only_what_is_missing(tmp_path):
    first = _run(tmp_path, "--workers", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((tmp_path / "h2h.json").read_text())
    task = result["tasks"]["toy"]
    samples, compute = task["budget"]["samples"], task["budget"]["compute"]
    # compute counts model calls times the batch: integer-valued floats, added and doubled exactly
    assert samples == 8 and compute == 8 / 4 * task["rlr_compute_per_update"]  # toy: batch 4
    methods = task["methods"]
    for name, entry in methods.items():
        for xs, cs, ys in zip(entry["samples"], entry["compute"], entry["truth_target"], strict=True):
            assert xs[0] == 0 and cs[0] == 0 and ys[0] == task["start"]["truth_target"]  # the untrained model
            assert xs[-1] >= samples and cs[-1] >= compute, name  # both budgets met
            # an evaluation at every 4 samples and at the end; the value at N samples is the one there
            assert xs[: samples // 4 + 1] == [0, 4, 8]
        assert entry["at_samples"]["truth_target"] == [ys[2] for ys in entry["truth_target"]]
        # the learning rate is the best of the tuning runs' final truth_target
        tuned = result["tuning"]["tasks"]["toy"][name]
        assert entry["lr"] == tuned["chosen"] == tuned["lrs"][tuned["truth_target"].index(max(tuned["truth_target"]))]
    rlr, tbp, ppo = methods["rlr"], methods["truncated_bp"], methods["lr_ppo"]
    assert [c[-1] for c in rlr["compute"]] == [compute] * len(rlr["seeds"])  # C is RLR's compute on N samples
    assert rlr["final"]["samples"][0] == samples
    # truncated backprop costs less per video, so it trains past N samples until it has spent C;
    # DDPO with PPO (two updates per batch) costs more, so it stops at N samples past C
    assert tbp["compute_per_sample"] < rlr["compute_per_sample"] < ppo["compute_per_sample"]
    assert tbp["final"]["samples"][0] > samples and ppo["final"]["samples"][0] == samples
    assert ppo["final"]["compute"][0] > compute
    # the extra seed went to the two best at N samples, and only to them
    best = sorted(methods, key=lambda m: methods[m]["at_samples"]["truth_target_mean"], reverse=True)[:2]
    assert task["best_two"] == best
    assert {m: e["seeds"] for m, e in methods.items()} == {m: [0, 1, 2] if m in best else [0, 1] for m in methods}
    assert (tmp_path / "h2h.png").stat().st_size > 0

    # A resume redoes only the missing unit, and the same way (one thread, fixed seeds); a task an
    # earlier run wrote to --out, whose units are gone, stays in it.
    unit = tmp_path / "work" / "toy" / "runs" / "rlr" / "seed-1.json"
    before = json.loads(unit.read_text())
    unit.unlink()
    earlier = {**result, "command": "an earlier command", "tasks": {"gone": task}}
    earlier["config"] = {"gone": result["config"]["toy"]}
    earlier["tuning"] = {**result["tuning"], "tasks": {"gone": result["tuning"]["tasks"]["toy"]}}
    (tmp_path / "h2h.json").write_text(json.dumps(earlier))
    again = _run(tmp_path, "--workers", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [line for line in again.stdout.splitlines() if line.startswith("start")] == ["start run toy rlr seed 1"]
    after = json.loads(unit.read_text())
    assert [p["truth_target"] for p in after["curve"]] == [p["truth_target"] for p in before["curve"]]
    merged = json.loads((tmp_path / "h2h.json").read_text())
    assert merged["tasks"]["toy"]["methods"]["rlr"]["seeds"] == [0, 1, 2]
    assert merged["tasks"]["gone"] == task and merged["tuning"]["tasks"]["gone"] == result["tuning"]["tasks"]["toy"]
    assert merged["earlier_commands"] == {"gone": "an earlier command"} and "gone" not in merged["settings"]["tasks"]

    other = _run(tmp_path, "--samples", "12")  # units of other settings are never mixed in
    assert other.returncode != 0 and "samples" in other.stderr


def _run_result(seed: int, compute: list[float], truth: list[float], all_three: list[float], budget: float) -> dict:
    samples = [0, 4, 8]
    curve = [
        {"samples": s, "compute": c, "truth_target": t, "truth_all_three": a, "reward": t, "seconds": 0.0}
        for s, c, t, a in zip(samples, compute, truth, all_three, strict=True)
    ]
    tool = _tool()
    return {
        "seed": seed,
        "lr": 1e-3,
        "overrides": [],
        "curve": curve,
        "final": {**{k: curve[-1][k] for k in tool.CURVE_KEYS}, "samples": 8, "compute": compute[-1]},
        "at_samples": tool._interpolate(curve, "samples", 8),
        "at_compute": tool._interpolate(curve, "compute", budget),
        "peak_memory_mib": 1.0,
        "seconds": 1.0,
        "steps": 2,
        "compute_per_sample": compute[-1] / 8,
        "backprop_depth": 1.0,
        "estimator_stats": {},
    }


def test_the_verdict_reads_reach_and_equal_compute_off_the_curves():
    tool = _tool()
    budget = {"samples": 8, "compute": 200.0}
    # RLR: 200 compute for 8 samples; GRPO: 300. Two seeds each, the same curve shifted by +-0.02.
    rlr = [
        _run_result(s, [0, 100, 200], [0.4 + d, 0.8 + d, 0.9 + d], [0.5, 0.5, 0.5], 200)
        for s, d in ((0, 0.02), (1, -0.02))
    ]
    grpo = [
        _run_result(s, [0, 150, 300], [0.4, 0.6 + d, 0.7 + d], [0.5, 0.6, 0.4], 200) for s, d in ((0, 0.02), (1, -0.02))
    ]
    methods = {"rlr": tool.method_entry(rlr), "grpo": tool.method_entry(grpo)}
    v = tool.verdict(methods, budget)
    # float64 arithmetic on these curves (means over 2 seeds, linear interpolation between points
    # >= 0.1 apart in truth): a few roundings each, at the values' size over that step (sum_atol)
    truth_atol, compute_atol = sum_atol(10, 1.0 / 0.1, EPS64), sum_atol(10, 300 / 0.1, EPS64)
    assert v["grpo_final_truth_target"] == pytest.approx(0.7, abs=truth_atol) and v["grpo_final_compute"] == 300
    # RLR's mean curve (0.4, 0.8, 0.9) reaches 0.7 three quarters of the way to 100: at 75
    assert v["rlr_compute_to_reach_it"] == pytest.approx(75.0, abs=compute_atol)
    assert v["rlr_compute_to_reach_it_over_grpo_compute"] == pytest.approx(0.25, abs=2 * compute_atol / 300)
    assert v["rlr_reaches_grpo_final_in_half_its_compute"]
    # at C = 200: RLR 0.9 against GRPO's 0.6 + (0.7 - 0.6) * 50 / 150, paired by seed (equal shifts)
    diff = v["rlr_minus_grpo_truth_target_at_equal_compute"]
    assert diff["diff"] == pytest.approx(0.9 - (0.6 + 0.1 / 3), abs=truth_atol)
    assert diff["se"] == pytest.approx(0.0, abs=truth_atol)  # the paired differences equal but for rounding
    assert v["rlr_0.1_above_grpo_at_equal_compute"]
    # all three: RLR 0.5; GRPO 0.4 at N samples (its end), 0.6 - 0.2 / 3 at C
    assert v["rlr_minus_grpo_truth_all_three_at_samples"]["diff"] == pytest.approx(0.1, abs=truth_atol)
    assert v["rlr_truth_all_three_no_worse_than_grpo_at_samples"]
    assert v["rlr_minus_grpo_truth_all_three_at_compute"]["diff"] == pytest.approx(
        0.5 - (0.6 - 0.2 / 3), abs=truth_atol
    )
    assert not v["rlr_truth_all_three_no_worse_than_grpo_at_compute"]
    # a target GRPO ends above and RLR never reaches
    grpo_high = [_run_result(s, [0, 150, 300], [0.4, 0.9, 0.99], [0.5] * 3, 200) for s in (0, 1)]
    v = tool.verdict({"rlr": methods["rlr"], "grpo": tool.method_entry(grpo_high)}, budget)
    assert v["rlr_compute_to_reach_it"] is None and not v["rlr_reaches_grpo_final_in_half_its_compute"]


def test_a_unit_killed_mid_run_goes_on_from_its_last_evaluation_and_ends_the_same(tmp_path, monkeypatch):
    tool = _tool()
    settings = tool.Settings(
        tasks=("toy",), methods=("rlr",), samples=12, seeds=(0,), extra_seeds=(), lrs=(1e-3,), tune_samples=4,
        tune_seed=100, eval_every=4, eval_videos=4, threads=1, overrides=(),
    )  # fmt: skip
    base = tool.base_unit("toy", settings, tmp_path / "base")

    def train(workdir: Path) -> dict:
        return tool.train_unit(
            "toy", "rlr", 0, 1e-3, 12, 12 / 4 * base["rlr_compute_per_update"], settings, base, workdir, True
        )

    whole = train(tmp_path / "whole")
    evaluate, calls = tool._evaluate, []

    def killed_at_the_third(*args, **kwargs):  # the process dies while evaluating at 12 videos
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(tool, "_evaluate", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed")
    progress = json.loads((tmp_path / "killed" / "progress.json").read_text())
    assert [p["samples"] for p in progress["curve"]] == [0, 4, 8]  # checkpointed after each evaluation
    monkeypatch.setattr(tool, "_evaluate", evaluate)
    resumed = train(tmp_path / "killed")

    def untimed(result: dict) -> dict:  # wall time differs between any two runs
        curve = [{k: v for k, v in point.items() if k != "seconds"} for point in result["curve"]]
        return {"curve": curve, **{k: result[k] for k in ("steps", "at_samples", "at_compute", "estimator_stats")}}

    assert untimed(resumed) == untimed(whole)  # every evaluation, bit for bit


def test_flow_only_methods_are_planned_on_flow_matching_tasks_only(tmp_path):
    """Flow-GRPO-Fast's window (``grpo_fast``) runs where the preset samples the flow SDE
    (tiny-shapes-wan), not on a DDIM chain (toy, tiny-shapes)."""
    tool = _tool()
    tasks = ("toy", "tiny-shapes", "tiny-shapes-wan-direction")
    settings = tool.Settings(tasks, ("rlr", "grpo_fast"), 8, (0,), (), (1e-3,), 4, 100, 4, 4, 1, ())
    assert [tool.task_methods(settings, t) for t in tasks] == [("rlr",), ("rlr",), ("rlr", "grpo_fast")]
    for task in tasks:  # the base units done, so that every tuning run is planned
        tool._write(tool.Unit("base", task).path(tmp_path), {})
    planned = {(u.task, u.method) for u, _ in tool.plan(settings, tmp_path) if u.kind == "tune"}
    assert planned == {(t, "rlr") for t in tasks} | {("tiny-shapes-wan-direction", "grpo_fast")}


def test_the_baselines_of_methods_on_the_flow_presets_are_their_references():
    """The flow-matching presets give RLR a state baseline; DDPO with PPO (``lr_ppo``) is run as its
    reference, without one, and RLR keeps its preset's."""
    from rlr_video.config import load_config

    overrides = _tool().method_overrides(4)
    for task in ("tiny-shapes-wan", "tiny-shapes-wan-direction"):
        assert load_config(task, overrides["rlr"]).estimator.state_baseline
        assert not load_config(task, overrides["lr_ppo"]).estimator.state_baseline
