"""GRPO and NFT from every preset: configs validate and build, ``rlr-video plan`` costs their
updates (predicted against measured peaks), and short runs from the CPU presets train and log their
diagnostics. Their exactness is tests/test_grpo.py's and tests/test_nft.py's; their resume is
tests/test_train.py's."""

from __future__ import annotations

import json
import re

import pytest
import torch
from backbone_fixtures import tiny_model_dir, tiny_options
from test_backbones_lora import PROMPTS, randomize_lora
from test_memory_planner import Squares

from rlr_video import cli
from rlr_video.backbones import load_backbone
from rlr_video.config import PRESET_DIR, ConfigError, load_config, run_context
from rlr_video.estimators import GRPO, NFT
from rlr_video.memory.cost_model import CostModel
from rlr_video.memory.planner import Planner
from rlr_video.memory.probe import measure_peak
from rlr_video.memory.recompute import MemoryOptions, apply_memory_options
from rlr_video.train.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("single_thread")

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
BUILT = {"grpo": GRPO, "nft": NFT}


@pytest.mark.parametrize("name", ["grpo", "nft"])
def test_every_preset_takes_the_estimator(name):
    """``estimator.name=grpo`` / ``nft`` on every shipped preset: the preset's RLR keys are left
    out, the section validates against the preset's run (its memory.checkpoint included), builds,
    and declares the update the planner costs, with a memory budget too."""
    assert len(PRESETS) >= 8
    for preset in PRESETS:
        config = load_config(preset, [f"estimator.name={name}"])
        run = run_context(config)
        assert config.estimator.name == name and not hasattr(config.estimator, "h"), preset
        assert isinstance(config.estimator.build(run), BUILT[name]), preset
        work = config.estimator.workload(run)
        assert 1 <= work.grad_calls < config.model.num_steps, preset
        load_config(preset, [f"estimator.name={name}", "memory.budget=80GB"])  # costed: a budget is fine


def test_bad_keys_are_named():
    with pytest.raises(ConfigError, match="estimator.sde_window_size"):
        load_config("toy", ["estimator.name=grpo", "estimator.sde_window_size=6"])  # [0, T // 2] holds 5
    with pytest.raises(ConfigError, match="estimator.sde_window_range"):
        load_config("toy", ["estimator.name=grpo", "estimator.sde_window_range=[4, 2]"])
    with pytest.raises(ConfigError, match="train.grad_accum"):
        load_config("toy", ["estimator.name=grpo", "estimator.inner_epochs=2", "train.grad_accum=2"])
    with pytest.raises(ConfigError, match="estimator.beta"):
        load_config("toy", ["estimator.name=nft", "estimator.beta=0"])
    with pytest.raises(ConfigError, match="estimator.timestep_fraction"):
        load_config("toy", ["estimator.name=nft", "estimator.timestep_fraction=0.05"])


@pytest.mark.parametrize(("estimator", "key"), [(GRPO(beta=0.01), "beta"), (NFT(kl_beta=0.01), "kl_beta")])
def test_a_kl_without_a_reference_model_is_named(estimator, key):
    """A backbone without base_model() (its model without the LoRA) cannot give the KL's reference."""
    from rlr_video.backbones.toy import ToyBackbone

    class NoReference(ToyBackbone):
        base_model = None

    toy = ToyBackbone.create()
    backbone = NoReference(toy.denoiser, toy.transition)
    with pytest.raises(ValueError, match=f"estimator.{key}=0.01 needs the reference model: NoReference"):
        estimator.estimate(backbone, Squares(), ["a", "a"], torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["modelscope", "wan"])
def test_predicted_update_peaks_match_measured(name):
    """One GRPO update on a tiny real model, and one NFT update with block checkpointing and frame
    chunks: the uncalibrated prediction is within 15% of the tracker's measurement (ModelScope's
    peak is a call with backward, tiny Wan's the causal VAE's decode)."""
    frames = 8 if name == "modelscope" else 9
    backbone = load_backbone(
        tiny_model_dir(name), **tiny_options(name, lora_rank=2, guidance_scale=3.0, num_frames=frames)
    )
    randomize_lora(backbone)
    reward = Squares()
    planner = Planner(CostModel(backbone, reward), batch=len(PROMPTS))
    config = load_config("toy", [f"model.num_steps={backbone.num_steps}", "train.batch_size=2"])
    chunked = MemoryOptions("block", planner.rows() // 4, 2, 4)
    for estimator, options in (("grpo", MemoryOptions()), ("nft", chunked)):
        section = load_config("toy", [f"estimator.name={estimator}", f"model.num_steps={backbone.num_steps}"]).estimator
        work = section.workload(run_context(config))
        built = section.build(run_context(config))
        handle = apply_memory_options(backbone, options, reward=reward, estimator=built)
        try:
            measured = measure_peak(
                lambda e=built: e.estimate(backbone, reward, PROMPTS, torch.Generator().manual_seed(0))
            ).peak
        finally:
            handle.restore()
        predicted = planner.estimate_workload(work, options).update
        assert abs(predicted / measured - 1) <= 0.15, (estimator, options, predicted, measured)


def test_plan_command_costs_grpo_and_nft(tmp_path, capsys):
    for name, kept in (("grpo", "trajectory + grad buffers"), ("nft", "x_0 + grad + LoRA copy")):
        out = tmp_path / f"{name}.json"
        assert cli.main(["plan", "toy", f"estimator.name={name}", "--budget", "1GiB", "--json", str(out)]) == 0
        text = capsys.readouterr().out
        assert "update (costed)" in text and "9 x backward" in text and kept in text and "h  " not in text
        plan = json.loads(out.read_text())
        assert plan["workload"]["grad_calls"] == 9 and plan["phases"].keys() == {"rollout", "score", "train"}
        assert plan["predicted_peak"] <= 2**30
        code = cli.main(["plan", "toy", f"estimator.name={name}", "--budget", "100000"])
        err = capsys.readouterr().err
        assert code == 1 and "too small for this estimator's update" in err
        assert re.search(r"needs [0-9.]+ MiB \((rollout|score|train) phase", err), err


@pytest.mark.parametrize("preset", ["toy", "tiny-shapes"])
@pytest.mark.parametrize("name", ["grpo", "nft"])
def test_short_runs_train_and_log_their_diagnostics(tmp_path, preset, name):
    """Two updates from the CPU presets (tiny-shapes: the shipped v-prediction model, made small);
    each logs the diagnostics the trainer averages over micro-batches."""
    out = tmp_path / "run"
    small = ["train.steps=2", "train.batch_size=4", "train.group_size=2", "train.progress=false"]
    if preset == "tiny-shapes":  # the toy runs take the default chain and accumulate micro-batches
        small += ["model.num_steps=3", "train.batch_size=2", "train.eval=null"]  # no held-out guard: not the point
    else:
        small += ["train.grad_accum=2"]
    assert cli.main(["train", preset, f"estimator.name={name}", *small, f"train.output_dir={out}"]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(r["skipped"] == 0.0 for r in rows)
    keys = ["policy_loss", "kl", "group_reward_std", "zero_std_ratio", "groups", "trained_steps"]
    keys += ["clip_fraction", "approx_kl"] if name == "grpo" else ["old_deviate", "optimality", "ema_decay"]
    for row in rows:
        for key in keys:
            assert isinstance(row[key], float) and row[key] == row[key], key
        assert row["grad_norm"] > 0
    assert rows[1]["kl"] > 0  # the LoRA (the toy's weights) moved off the reference after one update
