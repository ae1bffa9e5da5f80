"""HunyuanVideo 1.5 and 1.0: what the generic family tests do not reach.

The text templates' crop, the glyph (byT5) branch, the guider (1.5) and the embedded guidance
(1.0), the pipelines' own sigma schedule, the meta-device forward the planner traces, every
registered estimator on both, and the layouts each family refuses.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from backbone_fixtures import (
    HUNYUAN_TEXT_LENGTH,
    chain_rtol,
    pipeline_guidance,
    pipeline_kwargs,
    pipeline_latents,
    takes_negative_prompt,
    tiny_model_dir,
    tiny_options,
    tiny_pipeline,
)
from test_backbones_lora import randomize_lora
from test_backbones_training import Brightness
from tolerances import EPS, assert_max_abs, assert_rel_close, layers, network_rtol

from rlr_video.backbones import BackboneLoadError, load_backbone
from rlr_video.backbones.families.hunyuanvideo15 import _meta_forward
from rlr_video.chain import rollout
from rlr_video.estimators.registry import RunContext, available_estimators, config_class
from rlr_video.memory.cost_model import CostModel
from rlr_video.memory.meta import meta_backbone

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

GLYPH_PROMPTS = ['a sign that says "hello" on the left', "a red circle moving left"]


def _load(name: str, **options):
    return load_backbone(tiny_model_dir(name), **tiny_options(name, **options))


# ---------------------------------------------------------------------------- text


def test_template_crop_starts_at_the_prompt():
    """The tiny tokenizers give the templates as many tokens as the real ones (108 for Qwen2.5-VL,
    95 for Llama 3), so the crop keeps exactly the prompt's tokens: the mask counts them."""
    for name in ("hunyuanvideo15", "hunyuanvideo"):
        backbone = _load(name, lora_rank=0, guidance_scale=1.0)
        _, extras = backbone.prompt_encoder.encode(["a red circle", "a red circle moving left"])
        # the prompt, then the template's closing tokens: <|im_end|> \n <|im_start|> assistant \n (Qwen),
        # <|eot_id|> (Llama)
        closing = {"hunyuanvideo15": 5, "hunyuanvideo": 1}[name]
        assert extras["mask"].sum(dim=1).tolist() == [3 + closing, 5 + closing], name


def test_quoted_text_goes_through_the_glyph_encoder_as_in_the_pipeline():
    backbone = _load("hunyuanvideo15", lora_rank=0, guidance_scale=4.0)
    cond = backbone.encode(GLYPH_PROMPTS)
    pipe = tiny_pipeline("hunyuanvideo15")
    with torch.no_grad():  # as the pipeline's __call__ runs it (with gradients SDPA may pick another kernel)
        embeds, mask, embeds_2, mask_2 = pipe.encode_prompt(GLYPH_PROMPTS, device="cpu", batch_size=2)
    rows = slice(2, None)  # the prompts' rows, after the negative prompts'
    # Ours encodes the negative prompts in the same batch, 4 rows against the pipeline's 2: a
    # kernel may then sum in another order, each encoder's depth x sqrt(fan-in) (measured bitwise
    # equal here). Another template crop or a prompt left unquoted moves them by O(1).
    encoders = backbone.prompt_encoder.text_encoder
    rtol = network_rtol(*layers(encoders["qwen"]))
    assert_rel_close(cond.embeds[rows], embeds, rtol, "Qwen2.5-VL prompt embeddings against encode_prompt's")
    rtol = network_rtol(*layers(encoders["byt5"]))
    assert_rel_close(cond.extras["embeds_2"][rows], embeds_2, rtol, "byT5 glyph embeddings against encode_prompt's")
    for ours, theirs in ((cond.mask, mask), (cond.extras["mask_2"], mask_2)):
        assert torch.equal(ours[rows], theirs)  # token masks: exact
    # 'Text "hello". ' in bytes and the end token; a prompt without quotes: zeros and no mask
    assert cond.extras["mask_2"][2].sum() == len('Text "hello". ') + 1
    assert cond.extras["mask_2"][3].sum() == 0 and not cond.extras["embeds_2"][3].any()


# ---------------------------------------------------------------------------- sampling


def _guided_parity(guider: dict, tmp_path) -> float:
    """Rollout + decode vs HunyuanVideo15Pipeline with a guider of the given config, relative L2
    by the chain's depth x sqrt(fan-in) (chain_rtol; the pipeline's calls arranged otherwise).
    Returns the measured relative difference."""
    path = shutil.copytree(tiny_model_dir("hunyuanvideo15"), tmp_path / "hv15")
    config = path / "guider" / "guider_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | guider))
    backbone = load_backbone(path, **tiny_options("hunyuanvideo15", eta=0.0, lora_rank=0, negative_prompt="blurry"))
    traj = rollout(backbone, backbone.encode(GLYPH_PROMPTS), torch.Generator().manual_seed(0), 2)
    import diffusers

    pipe = diffusers.HunyuanVideo15Pipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    pipe.tokenizer_max_length = pipe.tokenizer_2_max_length = HUNYUAN_TEXT_LENGTH
    pipe.vae.enable_slicing()
    reference = pipe(
        GLYPH_PROMPTS,
        negative_prompt=["blurry"] * 2,
        num_inference_steps=backbone.num_steps,
        latents=traj.latents[-1].clone(),
        output_type="pt",
        **pipeline_kwargs("hunyuanvideo15"),
    ).frames
    ours = backbone.decode(traj.sample)
    return assert_rel_close(ours, reference, chain_rtol(backbone), f"frames against the pipeline, guider {guider}")


def test_the_guider_config_is_the_pipelines(tmp_path):
    """Guidance rescale, the original formulation and guidance on the middle steps only
    (start / stop): the guider combines the branches as in the pipeline, glyph prompts included."""
    guider = {"guidance_scale": 5.0, "guidance_rescale": 0.7, "use_original_formulation": True}
    _guided_parity(guider | {"start": 0.25, "stop": 0.75}, tmp_path)


def test_guidance_scale_replaces_the_guiders_and_one_turns_it_off():
    guided = _load("hunyuanvideo15", lora_rank=0)
    assert guided.guider.guidance_scale == 6.0 and guided.guided  # the published 6.0 (the builder's)
    plain = _load("hunyuanvideo15", lora_rank=0, guidance_scale=1.0)
    assert not plain.guided and not plain.encode(["x"]).guided
    calls = []
    handle = plain.denoiser.register_forward_hook(
        lambda m, a, k, out: calls.append(k["hidden_states"].shape[0]), with_kwargs=True
    )
    rollout(plain, plain.encode(GLYPH_PROMPTS), torch.Generator().manual_seed(0), 2)
    handle.remove()
    assert calls == [2] * plain.num_steps  # one call per step, the prompts' rows only


def test_the_sigmas_are_the_pipelines_not_the_schedulers_default():
    for name in ("hunyuanvideo15", "hunyuanvideo"):
        backbone = _load(name, lora_rank=0, num_steps=5)
        pipe = tiny_pipeline(name)
        steps = 5
        # the pipelines' own schedule: the scheduler's shift of linspace(1, 0, T + 1)[:-1]
        shift = pipe.scheduler.config.shift
        s = torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
        expected = torch.cat([shift * s / (1 + (shift - 1) * s), torch.zeros(1, dtype=torch.float64)])
        # the scheduler shifts in float32: the conversion, two products, a sum and a division,
        # 5 roundings of eps / 2 at values <= 1 (the shift's conditioning is <= 1); measured 0.5 eps
        assert_max_abs(backbone.transition.sigmas, expected, 5 * EPS / 2, f"{name} sigmas")
        pipe.scheduler.set_timesteps(steps)  # the scheduler's default spacing differs
        assert float((pipe.scheduler.sigmas.double() - expected).abs().max()) > 1e-3


@pytest.mark.parametrize(
    ("name", "height", "width", "frames"),
    # 1.5 taller than wide over 3 latent frames; 1.0 wider than tall over 17 frames, which its
    # VAE decodes as two temporal tiles (16 frames every 12) blended
    [("hunyuanvideo15", 48, 32, 9), ("hunyuanvideo", 32, 48, 17)],
)
def test_rollout_and_decode_equal_the_pipeline_at_other_sizes(name, height, width, frames):
    """The parity of tests/test_backbones_parity.py (square, 5 frames) at other aspect ratios and
    frame counts, with a glyph prompt."""
    size = dict(height=height, width=width, num_frames=frames)
    negative = "blurry" if takes_negative_prompt(name) else ""
    backbone = _load(name, eta=0.0, guidance_scale=4.0, lora_rank=0, negative_prompt=negative, **size)
    traj = rollout(backbone, backbone.encode(GLYPH_PROMPTS), torch.Generator().manual_seed(0), 2)
    ours = backbone.decode(traj.sample)
    pipe = tiny_pipeline(name)
    reference = pipe(
        GLYPH_PROMPTS,
        num_inference_steps=backbone.num_steps,
        latents=pipeline_latents(name, traj.latents[-1].clone()),
        **pipeline_guidance(name, pipe, 4.0, ["blurry"] * 2),
        output_type="pt",
        **(pipeline_kwargs(name) | size),
    ).frames
    assert ours.shape == reference.shape == (2, frames, 3, height, width)
    assert_rel_close(ours, reference, chain_rtol(backbone), f"{name} {height}x{width}x{frames}: frames")


def test_hunyuanvideo_embeds_the_guidance_and_takes_no_negative_prompt():
    low, high = _load("hunyuanvideo", lora_rank=0, guidance_scale=1.0), _load("hunyuanvideo", lora_rank=0)
    assert high.embedded_guidance == 6.0 and high.guidance_scale == 1.0  # no classifier-free guidance
    cond = high.encode(GLYPH_PROMPTS)
    assert not cond.guided and cond.embeds.shape[0] == 2
    x = high.initial_latents(2, torch.Generator().manual_seed(0))
    guided, plain = high.predict(x, 2, cond), low.predict(x, 2, cond)
    # the embedded guidance changes the prediction by far more than rounding (depth x sqrt(fan-in))
    assert float((guided - plain).norm() / plain.norm()) > 10 * network_rtol(*layers(high.denoiser))
    with pytest.raises(BackboneLoadError, match="no negative prompt"):
        _load("hunyuanvideo", negative_prompt="blurry")


@pytest.mark.parametrize("name", ["hunyuanvideo15", "hunyuanvideo"])
def test_every_estimator_runs(name):
    """The flow SDE gives every step a Gaussian with a log-prob: every registered estimator
    (RLR, LR, full and truncated backprop, ...) adds a finite, non-zero gradient to the LoRA."""
    backbone = _load(name, lora_rank=2, guidance_scale=3.0, num_steps=3)
    randomize_lora(backbone)
    assert all(backbone.transition.noise_std(t) > 0 for t in range(2, backbone.num_steps + 1))
    for estimator_name in available_estimators():
        estimator = config_class(estimator_name)(name=estimator_name).build(RunContext(num_steps=3, batch_size=2))
        for p in backbone.trainable_parameters():
            p.grad = None
        prompts = GLYPH_PROMPTS
        result = estimator.estimate(backbone, Brightness(), prompts, torch.Generator().manual_seed(0))
        grads = [p.grad for p in backbone.trainable_parameters() if p.grad is not None]
        assert not result.skipped and grads, estimator_name
        assert all(bool(torch.isfinite(g).all()) for g in grads) and any(g.abs().sum() > 0 for g in grads), (
            estimator_name
        )


# ---------------------------------------------------------------------------- decoding


def test_hunyuanvideo15_decodes_a_batch_one_video_at_a_time():
    backbone = _load("hunyuanvideo15", lora_rank=0)
    latents = backbone.initial_latents(2, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError):  # the reason (diffusers 0.42.1): its attention mask breaks on two videos
        backbone.vae.decode(latents / backbone.vae.config.scaling_factor)
    frames = backbone.decode(latents)
    assert frames.shape == (2, backbone.num_frames, 3, backbone.height, backbone.width)
    assert torch.equal(frames[1:], backbone.decode(latents[1:]))  # the same call on the same video: bitwise


# Small tiles on a 32x48 clip, so the tiny VAEs tile: 1.5 tiles of 2x2 latents (32 pixels) every
# latent (2 x 3 tiles); 1.0 tiles of 24 pixels (3x3 latents) every 16 (2 x 3 tiles) in each of
# its temporal tiles of 16 frames every 12 (its defaults): 17 frames make two.
TILES = {
    "hunyuanvideo15": dict(
        tile_sample_min_height=32,
        tile_sample_min_width=32,
        tile_latent_min_height=2,
        tile_latent_min_width=2,
        tile_overlap_factor=0.5,
    ),
    "hunyuanvideo": dict(
        tile_sample_min_height=24, tile_sample_min_width=24, tile_sample_stride_height=16, tile_sample_stride_width=16
    ),
}


class _SavedBytes:
    """Bytes of the tensors autograd saves (a ``saved_tensors_hooks`` pack function)."""

    def __init__(self):
        self.total = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.total += t.numel() * t.element_size()
        return t


@pytest.mark.parametrize(("name", "frames", "steps"), [("hunyuanvideo15", 5, 6), ("hunyuanvideo", 17, 12)])
def test_tiled_decoding_is_checkpointed_one_tile_at_a_time(name, frames, steps):
    """With ``vae_tiling`` the per-tile checkpointed decode gives ``vae.decode``'s frames and
    gradients bitwise, and keeps a fraction of the plain decode's activations."""
    backbone = _load(name, lora_rank=0, height=32, width=48, num_frames=frames, vae_tiling=True)
    backbone.vae.enable_tiling(**TILES[name])
    latents = backbone.initial_latents(1, torch.Generator().manual_seed(0))
    assert len(backbone.decode_steps(backbone.vae, backbone.vae_input(latents)).pieces) == steps
    results = {}
    for chunk in (None, 1):
        backbone.decode_checkpoint_chunk = chunk
        x = latents.clone().requires_grad_(True)
        saved = _SavedBytes()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            frames_out = backbone.decode(x)
        weights = torch.linspace(-1, 1, frames_out.numel()).reshape(frames_out.shape)
        (grad,) = torch.autograd.grad((frames_out * weights).sum(), x)
        results[chunk] = frames_out.detach(), grad, saved.total
    with torch.no_grad():
        reference = backbone.vae.decode(backbone.vae_input(latents), return_dict=False)[0]
    assert torch.equal(results[None][0], (reference.permute(0, 2, 1, 3, 4).float() / 2 + 0.5).clamp(0, 1))
    assert torch.equal(results[1][0], results[None][0]) and torch.equal(results[1][1], results[None][1])
    assert results[1][2] < results[None][2] / 2, (results[1][2], results[None][2])


# ---------------------------------------------------------------------------- memory


def test_meta_forward_is_the_transformers_forward_with_full_masks():
    """``_meta_forward`` (what the planner traces on the meta device) computes what the
    transformer computes when every text mask is full, on real tensors."""
    backbone = _load("hunyuanvideo15", lora_rank=2, guidance_scale=1.0)
    randomize_lora(backbone)
    cond = backbone.encode(GLYPH_PROMPTS)
    extras = {k: torch.ones_like(v) if k.startswith("mask") else v for k, v in cond.extras.items()}
    extras["mask"] = torch.ones_like(cond.mask)
    x = backbone.initial_latents(2, torch.Generator().manual_seed(0))
    t = backbone.transition.timestep(2)
    b, c, f, h, w = x.shape
    kwargs = dict(
        hidden_states=torch.cat([x, torch.zeros(b, c + 1, f, h, w)], dim=1),
        timestep=t.expand(b),
        encoder_hidden_states=cond.embeds,
        encoder_attention_mask=extras["mask"],
        encoder_hidden_states_2=extras["embeds_2"],
        encoder_attention_mask_2=extras["mask_2"],
        image_embeds=torch.zeros(b, 729, backbone.denoiser.config.image_embed_dim),
    )
    with torch.no_grad():
        expected = backbone.denoiser(**kwargs, return_dict=False)[0]
        assert torch.equal(_meta_forward(backbone.denoiser, **kwargs), expected)


@pytest.mark.parametrize("name", ["hunyuanvideo15", "hunyuanvideo"])
def test_the_planner_costs_both_text_encoders_and_traces_on_the_meta_device(name):
    options = tiny_options(name, lora_rank=2, guidance_scale=3.0)
    real = load_backbone(tiny_model_dir(name), **options)
    meta = meta_backbone(tiny_model_dir(name), **options)
    meta.options.lora_rank = 2
    a, b = CostModel(real), CostModel(meta, device="cpu")
    shape = a.default_shape(2)
    assert a.call(shape).trace.saved == b.call(shape).trace.saved > 0
    assert a.decoder(shape).saved == b.decoder(shape).saved > 0
    encoders = real.prompt_encoder.text_encoder
    weights = sum(p.numel() * p.element_size() for m in encoders.values() for p in m.parameters())
    assert len(encoders) == 2 and a.fixed().details["text_encoder"] == weights == b.fixed().details["text_encoder"]


# ---------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    ("name", "pipeline"),
    [("hunyuanvideo15", "HunyuanVideo15ImageToVideoPipeline"), ("hunyuanvideo", "HunyuanVideoImageToVideoPipeline")],
)
def test_image_to_video_layouts_are_refused_listing_every_supported_pipeline(name, pipeline, tmp_path):
    path = shutil.copytree(tiny_model_dir(name), tmp_path / name)
    index = path / "model_index.json"
    index.write_text(json.dumps(json.loads(index.read_text()) | {"_class_name": pipeline}))
    with pytest.raises(BackboneLoadError) as err:
        load_backbone(path, **tiny_options(name))
    message = str(err.value)
    assert pipeline in message
    for supported in ("WanPipeline", "CogVideoXPipeline", "HunyuanVideo15Pipeline", "HunyuanVideoPipeline"):
        assert supported in message


# ---------------------------------------------------------------------------- planner and presets


@pytest.mark.parametrize("name", ["hunyuanvideo15", "hunyuanvideo"])
def test_update_peaks_are_predicted(name):
    """One RLR update (plain, and with each replayed call recomputed) and one GRPO update: the
    tracker's measured peak within 15% of the uncalibrated prediction (every row of the memory
    benchmark is in benchmarks/memory.json). With guidance, so 1.5's joint attention mask, which
    a fused attention kernel keeps for its backward pass, is (4, 1, N, N)."""
    from rlr_video.config import load_config, run_context
    from rlr_video.estimators import RLR
    from rlr_video.memory.planner import Planner
    from rlr_video.memory.probe import measure_peak
    from rlr_video.memory.recompute import MemoryOptions, apply_memory_options

    backbone = _load(name, lora_rank=2, guidance_scale=3.0, num_frames=9, num_steps=4)
    randomize_lora(backbone)
    reward = Brightness()
    planner = Planner(CostModel(backbone, reward), batch=2, zo="latent_lr", zo_samples=1)
    for memory, h in [(MemoryOptions(), 2), (MemoryOptions("call"), 2)]:
        estimator = RLR(h=h, zo="latent_lr", zo_samples=1)
        handle = apply_memory_options(backbone, memory, reward=reward, estimator=estimator)
        try:
            measured = measure_peak(
                lambda e=estimator: e.estimate(backbone, reward, GLYPH_PROMPTS, torch.Generator().manual_seed(0))
            ).peak
        finally:
            handle.restore()
        predicted = planner.estimate(h, memory).update
        assert abs(predicted / measured - 1) <= 0.15, (memory, h, predicted, measured)
    steps = [f"model.num_steps={backbone.num_steps}", "train.batch_size=2"]
    section = load_config("toy", ["estimator.name=grpo", *steps]).estimator
    run = run_context(load_config("toy", steps))
    grpo = section.build(run)
    measured = measure_peak(lambda: grpo.estimate(backbone, reward, GLYPH_PROMPTS, torch.Generator().manual_seed(0)))
    predicted = planner.estimate_workload(section.workload(run), MemoryOptions())
    assert abs(predicted.update / measured.peak - 1) <= 0.15, (predicted.update, measured.peak)


@pytest.mark.parametrize("estimator", ["rlr", "grpo"])
@pytest.mark.parametrize(
    ("name", "preset"), [("hunyuanvideo15", "hunyuanvideo15-composite"), ("hunyuanvideo", "hunyuanvideo-composite")]
)
def test_the_preset_trains_a_tiny_model_on_the_cpu(tmp_path, name, preset, estimator):
    """The preset with the tiny model, a pixel reward and two CPU steps: RLR (and GRPO, groups of
    two videos per prompt) updates the LoRA, and the saved LoRA loads in a fresh backbone."""
    from safetensors.torch import load_file

    from rlr_video import cli

    path = tiny_model_dir(name)
    out = tmp_path / "run"
    chosen = ["estimator.zo_samples=1"] if estimator == "rlr" else ["estimator.name=grpo", "train.group_size=2"]
    overrides = [
        *chosen,
        f"model.path={path}",
        "model.height=32",
        "model.width=32",
        "model.frames=5",
        "model.num_steps=4",
        "model.dtype=float32",
        "model.lora_rank=2",
        f"model.options={{max_sequence_length: {HUNYUAN_TEXT_LENGTH}, vae_tiling: true, gradient_checkpointing: true}}",
        "reward=brightness",
        'prompts.items=[a red circle moving left, a sign that says "hello"]',
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
    assert cli.main(["train", preset, *overrides]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(m["skipped"] == 0.0 and m["grad_norm"] > 0 for m in metrics), metrics
    lora = sorted(out.glob("checkpoints/step-*/lora/pytorch_lora_weights.safetensors"))[-1]
    assert any(float(t.abs().max()) > 0 for k, t in load_file(lora).items() if ".lora_B." in k)
    tuned = load_backbone(path, **tiny_options(name, lora_path=str(lora.parent)))
    assert len(tuned.trainable_parameters()) == len(load_file(lora))
