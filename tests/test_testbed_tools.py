"""The testbed's tools: pretrain_tiny_shapes.py (which makes the shipped weights), the
decision-time probe and the report card (eval_tiny_shapes.py).

The pretraining's timestep sampling and loss weights are checked directly; a two-step run
(and one continuing from it with ``--init``) must save a folder that diffusers loads like a
hub model. The probe runs on the shipped model.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler, TextToVideoSDPipeline

TOOLS = Path(__file__).resolve().parent.parent / "tools" / "testbed"


def _tool(name: str = "pretrain_tiny_shapes"):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_timesteps_are_uniform_or_focused_where_asked() -> None:
    tool = _tool()
    plain = tool.sample_timesteps(64, 1000, None, 0.7, torch.Generator().manual_seed(0))
    # Without a focus the draws are torch.randint's: runs made before the option repeat.
    assert torch.equal(plain, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(0)))
    t = tool.sample_timesteps(20000, 1000, (400, 800), 0.7, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() < 1000
    inside = ((t >= 400) & (t < 800)).float().mean().item()
    # a share of 20000 draws (a fixed seed): 4 standard deviations sqrt(p (1 - p) / n) = 0.011;
    # unfocused draws would give 0.4, the focus alone 0.7
    p = 0.7 + 0.3 * 0.4
    assert inside == pytest.approx(p, abs=4 * (p * (1 - p) / len(t)) ** 0.5)
    with pytest.raises(ValueError, match="--t-focus 800 400"):
        tool.sample_timesteps(4, 1000, (800, 400), 0.7, torch.Generator())


def test_x0_weights_turn_the_epsilon_loss_into_the_x0_loss_up_to_the_cap() -> None:
    tool = _tool()
    alpha_bar = DDIMScheduler(beta_schedule="linear").alphas_cumprod[[100, 600, 999]]
    assert torch.equal(tool.x0_weights(alpha_bar, 0.0), torch.ones(3))
    w = tool.x0_weights(alpha_bar, 100.0)
    inverse_snr = (1 - alpha_bar[1]) / alpha_bar[1]
    assert w[0] == 1.0  # low noise: the epsilon loss as it was
    assert w[1] == inverse_snr and 10 < w[1] < 100  # (1 - a) / a: the same float32 ops
    assert w[2] == 100.0


def test_a_short_run_saves_a_pipeline_and_another_continues_it(tmp_path) -> None:
    tool = _tool()
    common = ["--steps", "2", "--batch-size", "2", "--warmup", "1", "--save-every", "0", "--threads", "1"]
    first = tmp_path / "first"
    info = tool.main([*common, "--t-focus", "400", "800", "--x0-weight-cap", "100", "--out", str(first)])
    assert info["steps"] == 2 and all(torch.isfinite(torch.tensor(info["loss_curve"])))
    second = tmp_path / "second"
    tool.main([*common, "--init", str(first), "--seed", "1", "--out", str(second)])
    saved = json.loads((second / "train_info.json").read_text())
    assert saved["init_info"]["command"] == info["command"]
    pipes = [TextToVideoSDPipeline.from_pretrained(str(d)) for d in (first, second)]
    before, after = (dict(p.unet.named_parameters()) for p in pipes)
    assert any(not torch.equal(before[k], after[k]) for k in before), "--init run did not train"


def test_decision_time_probe_keeps_a_lightly_noised_video(tmp_path) -> None:
    probe = _tool("probe_decision_time")
    out = tmp_path / "probe.json"
    report = probe.main(["--videos", "3", "--kept-steps", "2", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    (level,) = report["levels"]
    # 2 of 25 leading DDIM steps start at t = 41: the real video shows through the noise and
    # keeps its colour and direction against the conflicting caption, which asks for others.
    assert level["start_timestep"] == 41 and level["steps_run"] == 2
    assert level["colour_kept"] == 1.0 and level["direction_kept"] == 1.0
    assert level["colour_follows"] == 0.0 and level["direction_follows"] == 0.0
    assert probe.conflicting("a red circle moving left on a black background") == (
        "a green square moving right on a black background"
    )


def test_decision_step_probe_switches_the_caption_mid_chain(tmp_path) -> None:
    probe = _tool("probe_decision_step")
    out = tmp_path / "probe.json"
    report = probe.main(["--videos", "3", "--steps", "4", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    assert report["timesteps"] == [751, 501, 251, 1] and len(report["switches"]) == 5
    first, last = report["switches"][0], report["switches"][-1]
    # switched before the first step: only the second caption was ever seen, and vice versa
    assert first["colour_second"] == 1.0 and first["colour_first"] == 0.0
    assert last["colour_first"] == 1.0 and last["colour_second"] == 0.0


def test_the_report_card_grades_held_out_prompts_only_when_asked(tmp_path, single_thread) -> None:
    from PIL import Image

    from rlr_video.testbed import shapes
    from rlr_video.testbed.tiny_model import NUM_FRAMES, RESOLUTION

    card = _tool("eval_tiny_shapes")
    out, sheet = tmp_path / "card.json", tmp_path / "sheet.png"
    argv = ["--per-combo", "1", "--train-combos", "0", "--steps", "2", "--threads", "1"]
    report = card.main([*argv, "--out", str(out), "--sheet", str(sheet)])
    assert json.loads(out.read_text()) == report
    assert "train" not in report and report["heldout"]["videos"] == len(shapes.HELDOUT_COMBOS)
    assert set(report["heldout"]["per_combo"]) == {" ".join(c) for c in shapes.HELDOUT_COMBOS}
    assert all(0 <= report["heldout"][a] <= 1 for a in ("colour", "shape", "direction", "all"))
    # one held-out video per row, its frames side by side, upscaled 4 times
    assert Image.open(sheet).size == (NUM_FRAMES * RESOLUTION * 4, len(shapes.HELDOUT_COMBOS) * RESOLUTION * 4)


def test_the_wan_pretraining_runs_both_phases_into_a_wan_pipeline(tmp_path) -> None:
    """Two steps of each phase of pretrain_tiny_shapes_wan.py: the VAE's latent statistics are
    measured into its config, and the transformer phase saves a folder WanPipeline loads."""
    from diffusers import WanPipeline

    tool = _tool("pretrain_tiny_shapes_wan")
    common = ["--steps", "2", "--warmup", "1", "--save-every", "2", "--eval-every", "0", "--threads", "1"]
    vae_run, run = tmp_path / "vae", tmp_path / "wan"
    tool.main(["vae", *common, "--vae-variant", "s2t2", "--batch-size", "2", "--out", str(vae_run)])
    vae_config = json.loads((vae_run / "vae" / "config.json").read_text())
    assert len(vae_config["latents_mean"]) == vae_config["z_dim"] == 8
    assert vae_config["latents_std"] != [1.0] * 8  # measured on training videos, not the defaults
    tool.main(
        ["transformer", *common, "--vae", str(vae_run), "--batch-size", "4", "--cache-videos", "8", "--out", str(run)]
        + ["--weighting", "logit_normal", "--logit-mean", "1.0"]
    )
    info = json.loads((run / "pipeline" / "train_info.json").read_text())
    assert info["steps"] == 2 and info["vae_info"]["phase"] == "vae"
    pipe = WanPipeline.from_pretrained(str(run / "pipeline"))
    assert pipe.transformer.config.in_channels == 8 and pipe.scheduler.config.shift == 3.0

    # The caption-gain probe reads how much the model uses each word: a model whose
    # cross-attention writes nothing uses none, and every gain is exactly 0.
    comps = {"tokenizer": pipe.tokenizer, "scheduler": pipe.scheduler}
    models = {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder}
    ema = SimpleNamespace(ema_copy=models.__getitem__)
    cache = torch.load(run / "latents.pt", weights_only=True)
    gains = tool.caption_gain(ema, comps, cache, n=8)
    assert set(gains) == {f"{w}@{s}" for w in ("colour", "shape", "direction", "motion") for s in ("0.90", "0.60")}
    assert gains["colour@0.90"] != 0
    with torch.no_grad():
        for block in pipe.transformer.blocks:
            block.attn2.to_out[0].weight.zero_()
            block.attn2.to_out[0].bias.zero_()
    assert set(tool.caption_gain(ema, comps, cache, n=8).values()) == {0.0}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_wan_pretraining_on_cuda_trains_as_on_the_cpu(tmp_path) -> None:
    """``--device cuda`` draws data and noise on the CPU as a CPU run does, so one step of each
    phase from the same seed has the same loss. Tolerance: cuDNN's TF32 convolutions in the VAE
    move the loss by ~1e-3 relative (test_backbones_cuda.py's note); 1e-2 leaves room, and a
    different batch or noise moves it by tens of percent."""
    tool = _tool("pretrain_tiny_shapes_wan")
    common = ["--steps", "1", "--warmup", "1", "--save-every", "1", "--eval-every", "0", "--threads", "1"]
    losses = {}
    for device in ("cpu", "cuda"):
        vae_run, run = tmp_path / device / "vae", tmp_path / device / "wan"
        tool.main(["vae", *common, "--device", device, "--batch-size", "2", "--out", str(vae_run)])
        vae_loss = json.loads((vae_run / "train_info.json").read_text())["loss_curve"][0]
        tool.main(
            ["transformer", *common, "--device", device, "--vae", str(tmp_path / "cpu" / "vae")]
            + ["--batch-size", "4", "--cache-videos", "8", "--out", str(run)]
        )
        info = json.loads((run / "pipeline" / "train_info.json").read_text())
        assert info["device"] == device
        losses[device] = (vae_loss, info["loss_curve"][0])
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-2)
