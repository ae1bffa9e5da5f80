"""LTX-Video: what the family brings beyond the per-family tests (which include ``ltx``).

Parity with ``LTXPipeline`` for the 0.9.0 layout (dynamic shift, plain decoder) and at awkward
sizes for both layouts, and for a 0.9.1-style decoder with injected noise; the sigmas against an
independent re-implementation of the pipeline's schedule; the token mask, the frame rate, the
stored latent statistics and the decode options each matter; the cost model's hooks and its
prediction; a preset trains a tiny model on the CPU; the error for a layout no family takes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from backbone_fixtures import (
    T5_MAX_LENGTH,
    chain_rtol,
    pipeline_kwargs,
    pipeline_latents,
    tiny_ltx_pipeline,
    tiny_model_dir,
    tiny_options,
)
from test_backbones_lora import PROMPTS, randomize_lora
from test_backbones_training import Brightness
from tolerances import EPS, assert_max_abs, assert_rel_close, layers, network_rtol

from rlr_video import cli
from rlr_video.backbones import BackboneLoadError, load_backbone
from rlr_video.backbones.families.ltx import DECODE_NOISE_SEED
from rlr_video.backbones.family import families
from rlr_video.backbones.text import TextConditioning
from rlr_video.chain import rollout

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

# diffusers computes the sigmas in float32 (FlowMatchEulerDiscreteScheduler.set_timesteps): the
# conversion of linspace, 1 / t - 1, + e^mu, the division and the terminal stretch's six ops, at
# most 12 roundings of eps / 2 at values <= 1 (the shift's conditioning is <= 1 there); measured
# <= 0.85 eps. Another mu or a neighbouring step moves them by 1e-3 or more.
SIGMA_ATOL = 12 * EPS / 2


def _moves(a: torch.Tensor, b: torch.Tensor, module: torch.nn.Module) -> bool:
    """``a`` and ``b`` differ by more than 10 times the rounding of ``module`` in another order
    (its depth x sqrt(fan-in), relative L2): the change made them differ, not the kernels."""
    return float((a - b).norm() / b.norm()) > 10 * network_rtol(*layers(module))


def _parity(name: str, path=None, seed_global: bool = False, guidance: float = 4.0, **size) -> float:
    """Our rollout + decode against LTXPipeline's frames, relative L2 by the chain's depth x
    sqrt(fan-in) (chain_rtol: the pipeline makes the same calls, arranged otherwise; measured
    bitwise equal here). Returns the measured relative difference."""
    path = path or tiny_model_dir(name)
    options = tiny_options(name, eta=0.0, guidance_scale=guidance, lora_rank=0, negative_prompt="blurry", **size)
    backbone = load_backbone(path, **options)
    traj = rollout(backbone, backbone.encode(PROMPTS), torch.Generator().manual_seed(0), len(PROMPTS))
    ours = backbone.decode(traj.sample)
    import diffusers

    pipe = diffusers.LTXPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {**pipeline_kwargs(name), **size}
    if seed_global:  # a decoder with injected noise draws it from the global generator
        torch.manual_seed(DECODE_NOISE_SEED)
    reference = pipe(
        PROMPTS,
        negative_prompt=["blurry"] * len(PROMPTS),
        num_inference_steps=backbone.num_steps,
        guidance_scale=guidance,
        latents=pipeline_latents(name, traj.latents[-1].clone()),
        output_type="pt",
        **kwargs,
    ).frames
    assert ours.shape == reference.shape == (2, backbone.num_frames, 3, backbone.height, backbone.width)
    return assert_rel_close(ours, reference, chain_rtol(backbone), f"{name} {size}: frames against LTXPipeline")


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("ltx090", {}),  # 0.9.0: dynamic shift from the sequence length, shift_terminal, plain decoder
        ("ltx090", {"height": 96, "width": 32, "num_frames": 17}),
        ("ltx", {"height": 64, "width": 96, "num_frames": 17}),  # 0.9.5: timestep-conditioned decoder
        ("ltx", {"guidance": 1.0}),  # no unconditional branch: the prompts' masks alone
    ],
)
def test_rollout_and_decode_equal_ltx_pipeline(name, size):
    diff = _parity(name, **size)
    print(f"{name} {size}: parity relative difference {diff:.3g}")


def test_a_decoder_with_injected_noise_equals_the_pipeline_seeded_alike(tmp_path):
    """LTX-Video 0.9.1's decoder adds noise from the global generator: decoding seeds it, so
    the frames are one function of the latents, the pipeline's when it is seeded the same way."""
    from diffusers import AutoencoderKLLTXVideo

    pipe = tiny_ltx_pipeline()
    config = pipe.vae.config | {"decoder_inject_noise": (True, True, True, False)}
    vae = AutoencoderKLLTXVideo.from_config(config)
    vae.load_state_dict(pipe.vae.state_dict(), strict=False)  # the noise scales start at zero
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "per_channel_scale" in name:
                p.fill_(0.5)
    pipe.vae = vae.eval()
    pipe.save_pretrained(tmp_path / "ltx091")
    diff = _parity("ltx", tmp_path / "ltx091", seed_global=True)
    print(f"0.9.1-style decoder: parity relative difference {diff:.3g}")
    backbone = load_backbone(tmp_path / "ltx091", **tiny_options("ltx", lora_rank=0))
    x = backbone.initial_latents(2, torch.Generator().manual_seed(1))
    assert torch.equal(backbone.decode(x), backbone.decode(x))
    with torch.no_grad():  # the noise matters: the VAE's own decode, unseeded, differs call to call
        z, t = x.to(backbone.vae.dtype), torch.full((2,), backbone.decode_timestep)
        assert _moves(backbone.vae.decode(z, t)[0], backbone.vae.decode(z, t)[0], backbone.vae.decoder)


def _expected_sigmas(config: dict, steps: int, length: int) -> np.ndarray:
    """LTXPipeline's sigmas, written out from its reference (``LTXPipeline.__call__`` with
    ``calculate_shift``, ``FlowMatchEulerDiscreteScheduler.set_timesteps``: the exponential time
    shift, the stretch to ``shift_terminal``; diffusers 0.42), in float64."""
    s = np.linspace(1.0, 1.0 / steps, steps)
    if config.get("use_dynamic_shifting"):
        lo, hi = config["base_image_seq_len"], config["max_image_seq_len"]
        mu = config["base_shift"] + (config["max_shift"] - config["base_shift"]) * (length - lo) / (hi - lo)
        s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
    else:
        shift = config.get("shift", 1.0)
        s = shift * s / (1 + (shift - 1) * s)
    if config.get("shift_terminal"):
        one_minus = 1 - s
        s = 1 - one_minus / (one_minus[-1] / (1 - config["shift_terminal"]))
    return np.append(s, 0.0)


@pytest.mark.parametrize("name", ["ltx090", "ltx"])
@pytest.mark.parametrize(("steps", "size"), [(4, (9, 32, 64)), (7, (17, 96, 32)), (30, (33, 64, 96))])
def test_the_sigmas_follow_the_sequence_length(name, steps, size):
    frames, height, width = size
    options = tiny_options(name, num_steps=steps, num_frames=frames, height=height, width=width)
    backbone = load_backbone(tiny_model_dir(name), **options)
    config = json.loads((tiny_model_dir(name) / "scheduler" / "scheduler_config.json").read_text())
    length = ((frames - 1) // 8 + 1) * (height // 16) * (width // 16)  # latent frames x h x w
    expected = _expected_sigmas(config, steps, length)
    # the scheduler's float32 (SIGMA_ATOL); the timesteps are 1000 sigma, one more rounding at 1000
    sigmas, timesteps = backbone.transition.sigmas, backbone.transition.timesteps
    assert_max_abs(sigmas, torch.from_numpy(expected), SIGMA_ATOL, f"{name} sigmas, {steps} steps")
    atol = 1000 * (SIGMA_ATOL + EPS / 2)
    assert_max_abs(timesteps, torch.from_numpy(1000 * expected[:-1]), atol, f"{name} timesteps, {steps} steps")
    if name == "ltx090":  # the dynamic shift: a longer clip is shifted further towards noise
        longer = load_backbone(tiny_model_dir(name), **dict(options, num_frames=frames + 16))
        inner = slice(1, -2)  # between sigma = 1 and the terminal 0.1 (and the appended 0)
        assert (longer.transition.sigmas[inner] > backbone.transition.sigmas[inner]).all()


def test_a_fixed_shift_replaces_the_length_dependent_one():
    backbone = load_backbone(tiny_model_dir("ltx090"), **tiny_options("ltx090", shift=3.0))
    config = json.loads((tiny_model_dir("ltx090") / "scheduler" / "scheduler_config.json").read_text())
    expected = _expected_sigmas(config | {"use_dynamic_shifting": False, "shift": 3.0}, 4, 2 * 2 * 4)
    assert_max_abs(backbone.transition.sigmas, torch.from_numpy(expected), SIGMA_ATOL, "sigmas with a fixed shift")


def test_the_token_mask_goes_to_the_transformer():
    backbone = load_backbone(tiny_model_dir("ltx"), **tiny_options("ltx", guidance_scale=3.0))
    prompts = ["a cat", "a red circle moving left on the background"]
    cond = backbone.encode(prompts)
    tokens = backbone.prompt_encoder.tokenizer(
        [""] * 2 + prompts, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True, return_tensors="pt"
    )
    assert cond.mask.dtype == torch.bool and torch.equal(cond.mask, tokens.attention_mask.bool())
    assert cond.mask[2].sum() < cond.mask[3].sum() < T5_MAX_LENGTH  # padded: the mask matters
    # T5 runs on the padded prompts without a mask, as LTXPipeline does
    with torch.no_grad():
        unmasked = backbone.prompt_encoder.text_encoder(tokens.input_ids)[0]
    assert torch.equal(cond.embeds, unmasked)
    assert torch.equal(cond.select([1]).mask, cond.mask[[1, 3]])
    x = backbone.initial_latents(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        masked = backbone.predict(x, 2, cond)
        without = backbone.predict(x, 2, TextConditioning(cond.embeds, cond.guided, cond.prompts))
    assert _moves(masked, without, backbone.denoiser)


def test_frame_rate_scales_the_rotary_embedding():
    outputs = []
    for rate in (24, 8):
        backbone = load_backbone(tiny_model_dir("ltx"), **tiny_options("ltx", frame_rate=rate))
        assert backbone._rope_scale() == (8 / rate, 16, 16)  # temporal ratio / frame rate, spatial ratio
        x = backbone.initial_latents(2, torch.Generator().manual_seed(0))
        with torch.no_grad():
            outputs.append(backbone.predict(x, 2, backbone.encode(PROMPTS)))
    assert _moves(outputs[0], outputs[1], backbone.denoiser)


def test_latent_statistics_are_the_vaes_stored_weights():
    backbone = load_backbone(tiny_model_dir("ltx090"), **tiny_options("ltx090"))
    vae = backbone.vae
    assert "latents_mean" not in vae.config and "latents_std" not in vae.config
    saved = tiny_ltx_pipeline(decoder="0.9.0").vae  # the builder's random statistics, saved as weights
    assert torch.equal(vae.latents_mean, saved.latents_mean) and not torch.equal(vae.latents_mean, torch.zeros(8))
    x = backbone.initial_latents(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        frames = backbone.decode(x)
        expected = vae.decode(x * vae.latents_std.view(1, -1, 1, 1, 1) + vae.latents_mean.view(1, -1, 1, 1, 1))[0]
        assert torch.equal(frames, (expected.permute(0, 2, 1, 3, 4) / 2 + 0.5).clamp(0, 1))
        vae.latents_mean.zero_()
        assert _moves(backbone.decode(x), frames, backbone.vae.decoder)


def test_decode_timestep_and_noise():
    options = tiny_options("ltx", decode_timestep=0.05, decode_noise_scale=None)
    backbone = load_backbone(tiny_model_dir("ltx"), **options)
    assert backbone.decode_noise_scale == backbone.decode_timestep == 0.05  # the pipeline's default
    x = backbone.initial_latents(2, torch.Generator().manual_seed(0)).requires_grad_(True)
    frames = backbone.decode(x)
    with torch.no_grad():  # one function: the same noise on every call, with or without gradients
        # (without them the decoder's kernels may sum in another order: its depth x sqrt(fan-in);
        # other noise moves the frames by far more, as the checks below show)
        assert_rel_close(backbone.decode(x), frames, network_rtol(*layers(backbone.vae.decoder)), "decode again")
        backbone.decode_noise_scale = 0.0
        assert _moves(backbone.decode(x), frames, backbone.vae.decoder)
        backbone.decode_noise_scale, backbone.decode_timestep = 0.05, 0.5
        assert _moves(backbone.decode(x), frames, backbone.vae.decoder)
    with pytest.raises(ValueError, match="timestep_conditioning false"):
        load_backbone(tiny_model_dir("ltx090"), **tiny_options("ltx090", decode_timestep=0.05))


def test_sizes_and_frames_are_checked():
    path = tiny_model_dir("ltx")
    with pytest.raises(ValueError, match="num_frames=10 must be 1 \\+ a multiple of 8"):
        load_backbone(path, **tiny_options("ltx", num_frames=10))
    with pytest.raises(ValueError, match="must be multiples of 16"):
        load_backbone(path, **tiny_options("ltx", height=40))


def test_a_layout_no_family_takes_lists_every_supported_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "LTX2Pipeline"}))
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"_class_name": "LTX2VideoTransformer3DModel"}))
    with pytest.raises(BackboneLoadError) as err:
        load_backbone(tmp_path)
    message = str(err.value)
    assert "LTX2Pipeline" in message
    for family in families().values():
        for pipeline in family.pipelines:
            assert pipeline in message, (pipeline, message)
        for folder, cls in family.denoisers:
            assert f"{folder}/{cls}" in message
    assert "ltx: LTXPipeline (transformer/LTXVideoTransformer3DModel)" in message


def test_cost_model_hooks_and_prediction():
    """(C, F_lat, h, w) latents, h x w tokens per latent frame; the meta twin predicts what the
    loaded model does; one RLR update's measured peak within 15% of the uncalibrated prediction
    (the decoder, decoded whole, is the peak; the measured rows are in benchmarks/memory.json)."""
    from rlr_video.estimators import RLR
    from rlr_video.memory.cost_model import CostModel
    from rlr_video.memory.meta import meta_backbone
    from rlr_video.memory.planner import Planner
    from rlr_video.memory.probe import measure_peak
    from rlr_video.memory.recompute import MemoryOptions, apply_memory_options

    options = tiny_options("ltx", lora_rank=2, guidance_scale=3.0, num_frames=17, height=64, width=64)
    backbone = load_backbone(tiny_model_dir("ltx"), **options)
    assert backbone.latent_shape == backbone.latent_shape_for(17, 64, 64) == (8, 3, 4, 4)
    assert backbone.latent_shape_for(33, 96, 32) == (8, 5, 6, 2)
    assert backbone.tokens_per_latent_frame(6, 2) == 12
    meta = meta_backbone(tiny_model_dir("ltx"), **options)
    meta.options.lora_rank = 2
    shape = CostModel(backbone).default_shape(2)
    real_call = CostModel(backbone, Brightness()).call(shape)
    assert real_call.trace.saved == CostModel(meta, Brightness(), device="cpu").call(shape).trace.saved
    randomize_lora(backbone)
    reward = Brightness()
    planner = Planner(CostModel(backbone, reward), batch=2, zo="latent_lr", zo_samples=1)
    assert planner.estimate(1, MemoryOptions()).bottleneck == "fo"
    for memory, h in [(MemoryOptions(), 1), (MemoryOptions("call"), 3)]:
        estimator = RLR(h=h, zo="latent_lr", zo_samples=1)
        handle = apply_memory_options(backbone, memory, reward=reward, estimator=estimator)
        try:
            measured = measure_peak(
                lambda e=estimator: e.estimate(backbone, reward, PROMPTS, torch.Generator().manual_seed(0))
            ).peak
        finally:
            handle.restore()
        predicted = planner.estimate(h, memory).update
        assert abs(predicted / measured - 1) <= 0.15, (memory, h, predicted, measured)


@pytest.mark.parametrize("estimator", ["rlr", "grpo"])
def test_the_preset_trains_a_tiny_model_on_the_cpu(tmp_path, estimator):
    """``ltx-composite`` with the tiny model, a pixel reward and two CPU steps: RLR (and GRPO,
    groups of two videos per prompt) updates the LoRA, and the saved LoRA loads in a fresh backbone."""
    from safetensors.torch import load_file

    path = tiny_model_dir("ltx")
    out = tmp_path / "run"
    chosen = ["estimator.zo_samples=1"] if estimator == "rlr" else ["estimator.name=grpo", "train.group_size=2"]
    overrides = [
        *chosen,
        f"model.path={path}",
        "model.height=32",
        "model.width=64",
        "model.frames=9",
        "model.num_steps=4",
        "model.dtype=float32",
        "model.lora_rank=2",
        f"model.options={{max_sequence_length: {T5_MAX_LENGTH}, frame_rate: 24, decode_timestep: 0.05}}",
        "reward=brightness",
        "prompts.items=[a red circle moving left, a blue square]",
        "prompts.path=null",
        "train.steps=2",
        "train.batch_size=2",
        "train.grad_accum=1",
        "train.mixed_precision=no",
        "train.prompt_baseline=false",
        "train.checkpoint_every=2",
        "train.progress=false",
        "optim.lr=1e-2",
        f"train.output_dir={out}",
    ]
    assert cli.main(["train", "ltx-composite", *overrides]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(m["skipped"] == 0.0 and m["grad_norm"] > 0 for m in metrics), metrics
    lora = sorted(out.glob("checkpoints/step-*/lora/pytorch_lora_weights.safetensors"))[-1]
    assert any(float(t.abs().max()) > 0 for k, t in load_file(lora).items() if ".lora_B." in k)
    tuned = load_backbone(path, **tiny_options("ltx", lora_path=str(lora.parent)))
    assert len(tuned.trainable_parameters()) == len(load_file(lora))


def test_fsdp_shards_the_transformer_blocks_in_the_plan(tmp_path):
    """8 ``LTXVideoTransformerBlock``s over 8 processes: each keeps 1/8 of the blocks' weights
    plus two gathered blocks; the text encoder and VAE stay whole (configs only, meta device)."""
    import shutil

    from rlr_video.memory.cost_model import CostModel
    from rlr_video.memory.meta import meta_backbone

    path = tmp_path / "ltx8"
    shutil.copytree(tiny_model_dir("ltx"), path)
    config = path / "transformer" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"num_layers": 8}))
    backbone = meta_backbone(path, **tiny_options("ltx"))
    backbone.options.lora_rank = 2
    whole, sharded = (CostModel(backbone, device="cpu", processes=8, sharding=s).fixed() for s in ("none", "fsdp"))
    block = sum(p.numel() * p.element_size() for p in backbone.denoiser.transformer_blocks[0].parameters())
    assert whole.weights - sharded.weights == 8 * block - 8 * block // 8 - 2 * block
    for part in ("vae", "text_encoder"):
        assert sharded.details[part] == whole.details[part] > 0


def test_grpo_update_peak_is_predicted():
    """One GRPO update (Flow-GRPO's step: its peak is scoring, the decode without gradients):
    the uncalibrated prediction within 15% of the tracker's measurement."""
    from rlr_video.config import load_config, run_context
    from rlr_video.memory.cost_model import CostModel
    from rlr_video.memory.planner import Planner
    from rlr_video.memory.probe import measure_peak
    from rlr_video.memory.recompute import MemoryOptions

    options = tiny_options("ltx", lora_rank=2, guidance_scale=3.0, num_frames=17, height=64, width=64)
    backbone = load_backbone(tiny_model_dir("ltx"), **options)
    randomize_lora(backbone)
    reward = Brightness()
    steps = [f"model.num_steps={backbone.num_steps}", "train.batch_size=2"]
    run = run_context(load_config("toy", steps))
    section = load_config("toy", ["estimator.name=grpo", *steps]).estimator
    estimator = section.build(run)
    measured = measure_peak(lambda: estimator.estimate(backbone, reward, PROMPTS, torch.Generator().manual_seed(0)))
    predicted = Planner(CostModel(backbone, reward), batch=2).estimate_workload(section.workload(run), MemoryOptions())
    assert abs(predicted.update / measured.peak - 1) <= 0.15, (predicted.update, measured.peak)
