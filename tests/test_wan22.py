"""Wan 2.2: TI2V-5B (expanded timesteps, the 2.2 VAE) and A14B (two experts at a boundary).

Tiny random-weight ``WanPipeline`` folders of both layouts (``backbone_fixtures``) load through
``load_backbone``; the rules WanPipeline applies (diffusers 0.42 ``pipelines/wan/pipeline_wan.py``)
are re-implemented here and compared with what the backbones do: which expert and which guidance
scale a step gets, the per-token timesteps, the sizes; a rollout and decode equal the pipeline's
frames at awkward sizes; a replay, a step's log-prob and LoRA training use the expert that
sampled each step; LoRA files load in ``WanPipeline`` as diffusers' Wan loader reads them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from backbone_fixtures import chain_rtol, pipeline_kwargs, tiny_model_dir, tiny_options, tiny_pipeline
from test_backbones_lora import PROMPTS, probe, randomize_lora
from tolerances import assert_rel_close, layers, network_rtol

from rlr_video.backbones import BackboneLoadError, detect_family, load_backbone
from rlr_video.backbones.layout import Layout
from rlr_video.backbones.lora import lora_parameters
from rlr_video.chain import replay, rollout
from rlr_video.estimators.common import step_log_prob
from rlr_video.memory.cost_model import CostModel
from rlr_video.memory.meta import meta_backbone

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

TI2V, A14B = "wan22-ti2v", "wan22-a14b"


def _backbone(name: str, **options):
    return load_backbone(tiny_model_dir(name), **tiny_options(name, **options))


def _copy(name: str, tmp_path, **index_changes):
    """The tiny model with ``model_index.json`` edited (None removes a key)."""
    copy = shutil.copytree(tiny_model_dir(name), tmp_path / name)
    index = json.loads((copy / "model_index.json").read_text())
    for key, value in index_changes.items():
        index.pop(key) if value is None else index.__setitem__(key, value)
    (copy / "model_index.json").write_text(json.dumps(index))
    return copy


# ---------------------------------------------------------------------------- layouts


def test_each_wan_layout_is_its_own_family_and_the_others_refuse_it(tmp_path):
    assert detect_family(Layout(tiny_model_dir("wan"))) == "wan"
    assert detect_family(Layout(tiny_model_dir(TI2V))) == TI2V
    assert detect_family(Layout(tiny_model_dir(A14B))) == A14B
    with pytest.raises(BackboneLoadError, match=rf"holds a {A14B} model.*family='wan'"):
        load_backbone(tiny_model_dir(A14B), family="wan", **tiny_options(A14B))
    with pytest.raises(BackboneLoadError, match=rf"holds a wan model.*family='{TI2V}'"):
        load_backbone(tiny_model_dir("wan"), family=TI2V, **tiny_options("wan"))
    assert load_backbone(tiny_model_dir(TI2V), family="wan2.2-ti2v-5b", **tiny_options(TI2V)).family == TI2V
    both = _copy(A14B, tmp_path, expand_timesteps=True)
    with pytest.raises(BackboneLoadError, match=r"both a second expert \(transformer_2\) and expand_timesteps"):
        load_backbone(both, **tiny_options(A14B))
    no_boundary = _copy(A14B, tmp_path / "b", boundary_ratio=None)
    with pytest.raises(BackboneLoadError, match=r"transformer_2\) but no boundary_ratio"):
        load_backbone(no_boundary, **tiny_options(A14B))


def test_an_unsupported_layout_names_every_supported_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(BackboneLoadError) as info:
        load_backbone(tmp_path)
    message = str(info.value)
    for family, pipeline in [("wan", "WanPipeline"), (TI2V, "WanPipeline"), (A14B, "WanPipeline")]:
        assert f"{family}: {pipeline} (transformer/WanTransformer3DModel" in message
    assert "transformer_2/WanTransformer3DModel" in message
    for pipeline in ("AnimateDiffPipeline", "TextToVideoSDPipeline", "CogVideoXPipeline"):
        assert pipeline in message


def test_ti2v_sizes_are_multiples_of_32_and_others_are_refused():
    """WanPipeline rounds 48x64 down to 32x64 (its VAE's 16 pixels x the 2x2 patches); here it is
    an error naming the multiple."""
    with pytest.raises(ValueError, match=r"height=48, width=64 must be multiples of 32 .*spatial factor 16"):
        _backbone(TI2V, height=48)
    backbone = _backbone(TI2V, height=64, width=32, num_frames=9)
    assert backbone.latent_shape == (48, 3, 4, 2)  # 48 channels, (9 - 1) / 4 + 1 frames, 16 pixels each


def test_single_denoiser_models_refuse_the_expert_options():
    for option in ({"guidance_scale_2": 2.0}, {"lora_experts": ["high"]}):
        with pytest.raises(ValueError, match="apply to a mixture of experts.*one denoiser"):
            _backbone(TI2V, **option)
    with pytest.raises(ValueError, match=r"lora_experts=\['middle'\]: expected one or both of 'high'"):
        _backbone(A14B, lora_experts=["middle"])
    with pytest.raises(ValueError, match="guidance_scale <= 1 turns the unconditional branch off"):
        _backbone(A14B, guidance_scale=1.0, guidance_scale_2=3.0)


# ---------------------------------------------------------------------------- sampling


def _pipeline_rule(timesteps: torch.Tensor, boundary_ratio: float, train_steps: int) -> list[bool]:
    """WanPipeline.__call__: ``transformer`` (high noise) while ``t >= boundary_ratio *
    num_train_timesteps``, else ``transformer_2``; True for the high-noise expert."""
    return [bool(t >= boundary_ratio * train_steps) for t in timesteps]


@pytest.mark.parametrize("steps", [4, 7])
def test_a14b_steps_call_the_expert_and_guidance_the_pipeline_would(steps):
    backbone = _backbone(A14B, num_steps=steps, guidance_scale=4.0, guidance_scale_2=2.5)
    index = json.loads((tiny_model_dir(A14B) / "model_index.json").read_text())
    high = _pipeline_rule(backbone.transition.timesteps, index["boundary_ratio"], 1000)
    assert any(high) and not all(high)  # both experts run
    calls = []
    for name, model in (("high", backbone.denoiser), ("low", backbone.denoiser_2)):
        model.register_forward_hook(lambda *a, name=name: calls.append(name))
    traj = rollout(backbone, backbone.encode(PROMPTS), torch.Generator().manual_seed(0), len(PROMPTS))
    # chain step T is the scheduler's first timestep: one batched call per step (CFG rows stacked)
    assert calls == ["high" if h else "low" for h in high]
    for step in range(1, steps + 1):
        is_high = high[steps - step]
        assert backbone.denoiser_at(step) is (backbone.denoiser if is_high else backbone.denoiser_2)
        assert backbone.guidance_at(step) == (4.0 if is_high else 2.5)
    calls.clear()  # a replay of the whole chain calls the same experts in the same order
    with torch.no_grad():
        assert torch.equal(replay(backbone, backbone.encode(PROMPTS), traj, steps, 0), traj.sample)
    assert calls == ["high" if h else "low" for h in high]


def _ours(name: str, **options):
    backbone = _backbone(name, eta=0.0, lora_rank=0, negative_prompt="blurry", **options)
    traj = rollout(backbone, backbone.encode(PROMPTS), torch.Generator().manual_seed(0), len(PROMPTS))
    return backbone, backbone.decode(traj.sample), traj.latents[-1]


@pytest.mark.parametrize(
    "name, options, pipeline_options",
    [
        (TI2V, dict(height=64, width=32, num_frames=9, guidance_scale=4.0), dict(guidance_scale=4.0)),
        (A14B, dict(guidance_scale=4.0, guidance_scale_2=2.0), dict(guidance_scale=4.0, guidance_scale_2=2.0)),
        (A14B, dict(height=48, width=32, num_frames=9, num_steps=5, guidance_scale=3.0), dict(guidance_scale=3.0)),
    ],
    ids=["ti2v-64x32x9", "a14b-two-scales", "a14b-48x32x9-5-steps"],
)
def test_rollout_and_decode_equal_wan_pipeline_at_other_sizes(name, options, pipeline_options):
    backbone, ours, x_T = _ours(name, **options)
    kwargs = {**pipeline_kwargs(name), **{k: options[k] for k in ("height", "width", "num_frames") if k in options}}
    reference = tiny_pipeline(name)(
        PROMPTS,
        negative_prompt=["blurry"] * len(PROMPTS),
        num_inference_steps=backbone.num_steps,
        latents=x_T.clone(),
        output_type="pt",
        **pipeline_options,
        **kwargs,
    ).frames
    assert ours.shape == reference.shape == (len(PROMPTS), backbone.num_frames, 3, backbone.height, backbone.width)
    # the pipeline's calls arranged otherwise (the CFG rows, two experts): chain_rtol, by relative
    # L2 (measured 0 to 4e-7 of 3e-4 to 4e-4)
    diff = assert_rel_close(ours, reference, chain_rtol(backbone), f"{name} {options}: frames against WanPipeline")
    print(f"{name} {options}: parity relative difference {diff:.3g}")


def test_ti2v_gives_the_transformer_one_timestep_per_token():
    """WanPipeline with expand_timesteps: ``(mask[0][0][:, ::2, ::2] * t).flatten()``, expanded to
    the batch, with a mask of ones: (batch, latent frames x h/2 x w/2), every entry t."""
    backbone = _backbone(TI2V, guidance_scale=3.0)
    seen = []
    backbone.denoiser.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["timestep"]), with_kwargs=True)
    x = backbone.initial_latents(len(PROMPTS), torch.Generator().manual_seed(0))
    with torch.no_grad():
        backbone.predict(x, 3, backbone.encode(PROMPTS))
    mask = torch.ones(x.shape[1:], dtype=torch.float32)  # the pipeline's, per video
    t = backbone.transition.timestep(3)
    expected = (mask[0][:, ::2, ::2] * t).flatten().unsqueeze(0).expand(2 * len(PROMPTS), -1)  # CFG rows
    assert len(seen) == 1 and seen[0].dtype == torch.float32 and torch.equal(seen[0], expected)


# ---------------------------------------------------------------------------- training


class Squares:
    name = "squares"
    differentiable = True

    def __call__(self, frames: torch.Tensor, prompts) -> torch.Tensor:
        return (frames - 0.3).square().mean(dim=(1, 2, 3, 4))


def test_a14b_log_prob_and_replay_of_a_step_train_the_expert_that_sampled_it():
    backbone = _backbone(A14B, lora_rank=2, guidance_scale=3.0)
    randomize_lora(backbone)
    high = lora_parameters(backbone.denoiser)
    low = lora_parameters(backbone.denoiser_2)
    cond = backbone.encode(PROMPTS)
    traj = rollout(backbone, cond, torch.Generator().manual_seed(0), len(PROMPTS))
    params = backbone.trainable_parameters()
    assert len(params) == len(high) + len(low) and high and low
    for step in range(1, backbone.num_steps + 1):
        with torch.enable_grad():
            grads = torch.autograd.grad(step_log_prob(backbone, cond, traj, step).sum(), params, allow_unused=True)
        used = {id(p) for p, g in zip(params, grads) if g is not None and bool(g.abs().sum() > 0)}
        expert = high if backbone.denoiser_at(step) is backbone.denoiser else low
        other = low if expert is high else high
        assert used and used <= {id(p) for p in expert}, step
        assert not used & {id(p) for p in other}, step
    # an HO sub-chain across the boundary (steps 4, 3: high; 2: low) replays exactly and its
    # gradient reaches both experts
    with torch.enable_grad():
        x = replay(backbone, cond, traj, backbone.num_steps, 1)
        grads = torch.autograd.grad(x.square().sum(), params, allow_unused=True)
    assert torch.equal(x.detach(), traj.latents[1])
    reached = {id(p) for p, g in zip(params, grads) if g is not None and bool(g.abs().sum() > 0)}
    assert reached & {id(p) for p in high} and reached & {id(p) for p in low}


def test_a14b_base_model_turns_off_both_experts_lora():
    """GRPO's and NFT's KL reference: the model without its LoRA, on both experts."""
    tuned = _backbone(A14B, lora_rank=2, guidance_scale=3.0)
    randomize_lora(tuned)
    base = probe(_backbone(A14B, lora_rank=0, guidance_scale=3.0))

    def lora_effect() -> float:  # far above the rounding of another order (depth x sqrt(fan-in))
        return float((probe(tuned) - base).norm() / base.norm()) / network_rtol(*layers(tuned.denoiser))

    assert lora_effect() > 10
    with tuned.base_model():  # each LoRA layer adds nothing: the base model's ops, bitwise
        assert torch.equal(probe(tuned), base)
    assert lora_effect() > 10


@pytest.mark.parametrize("experts", [["high"], ["low"]])
def test_a14b_lora_on_one_expert(experts, tmp_path):
    backbone = _backbone(A14B, lora_rank=2, lora_experts=experts)
    on, off = (
        (backbone.denoiser, backbone.denoiser_2) if experts == ["high"] else (backbone.denoiser_2, backbone.denoiser)
    )
    assert backbone.trainable_parameters() == lora_parameters(on) and not lora_parameters(off)
    randomize_lora(backbone)
    tuned = probe(backbone)
    backbone.save_lora(tmp_path / "lora")
    files = sorted(p.relative_to(tmp_path / "lora").as_posix() for p in (tmp_path / "lora").rglob("*.safetensors"))
    expected = (
        "pytorch_lora_weights.safetensors" if experts == ["high"] else "transformer_2/pytorch_lora_weights.safetensors"
    )
    assert files == [expected]
    fresh = _backbone(A14B, lora_rank=0, lora_path=str(tmp_path / "lora"))
    assert fresh.lora_experts == tuple(experts) and torch.equal(probe(fresh), tuned)
    both = _backbone(A14B, lora_rank=2)
    before = probe(both)
    with pytest.raises(
        ValueError, match=rf"is for the expert\(s\) \{experts}, the model has a LoRA on \['high', 'low'\]"
    ):
        both.load_lora(tmp_path / "lora")
    assert torch.equal(probe(both), before)
    with pytest.raises(FileNotFoundError, match=r"the high-noise expert\) and / or .*transformer_2"):
        both.load_lora(tmp_path / "nowhere")
    # the planner costs the LoRA where it is: half the parameters of a LoRA on both experts
    assert CostModel(backbone).fixed().trainable * 2 == CostModel(both).fixed().trainable


def test_a14b_lora_loads_in_wan_pipeline_as_diffusers_reads_both_experts(tmp_path):
    """``load_lora_weights(folder)`` puts the first file on ``transformer``, and
    ``load_lora_weights(folder / "transformer_2", load_into_transformer_2=True)`` the second
    on the low-noise expert (WanLoraLoaderMixin): the pipeline then samples what we sample."""
    options = dict(lora_rank=2, lora_alpha=4, eta=0.0, guidance_scale=3.0, guidance_scale_2=2.0)
    backbone = _backbone(A14B, **options)
    randomize_lora(backbone)
    backbone.save_lora(tmp_path / "lora")
    traj = rollout(backbone, backbone.encode(PROMPTS), torch.Generator().manual_seed(0), len(PROMPTS))
    ours = backbone.decode(traj.sample)
    pipe = tiny_pipeline(A14B)

    def sample():
        kwargs = dict(guidance_scale=3.0, guidance_scale_2=2.0, output_type="pt", **pipeline_kwargs(A14B))
        return pipe(PROMPTS, num_inference_steps=backbone.num_steps, latents=traj.latents[-1].clone(), **kwargs).frames

    plain = sample()
    pipe.load_lora_weights(tmp_path / "lora")
    high_only = sample()
    pipe.load_lora_weights(tmp_path / "lora" / "transformer_2", load_into_transformer_2=True)
    tuned = sample()
    rtol = chain_rtol(backbone)  # the pipeline's sums in another order, as in test_backbones_lora
    for partly in (plain, high_only):  # each expert's LoRA must matter
        assert float((partly - ours).norm() / ours.norm()) > 10 * rtol
    assert_rel_close(tuned, ours, rtol, "A14B frames with both LoRA files loaded by WanPipeline")


def test_every_estimator_runs_on_the_a14b_sde():
    from rlr_video.estimators import RLR
    from rlr_video.estimators.registry import estimator_class

    backbone = _backbone(A14B, lora_rank=2, guidance_scale=3.0)
    assert all(backbone.transition.noise_std(t) > 0 for t in range(2, backbone.num_steps + 1))
    estimators = [RLR(h=2, zo="latent_lr"), RLR(h=2, zo="param_es")]
    estimators += [estimator_class(name)() for name in ("lr", "full_bp", "truncated_bp")]  # their defaults
    for estimator in estimators:
        for p in backbone.trainable_parameters():
            p.grad = None
        estimate = estimator.estimate(backbone, Squares(), PROMPTS, torch.Generator().manual_seed(0))
        grads = [p.grad for p in backbone.trainable_parameters() if p.grad is not None]
        assert not estimate.skipped and grads and all(bool(torch.isfinite(g).all()) for g in grads), estimator
        assert sum(float(g.norm()) for g in grads) > 0, estimator


# ---------------------------------------------------------------------------- memory


def test_the_planner_and_fsdp_see_both_experts():
    from rlr_video.backbones.sharding import shard_units

    backbone = _backbone(A14B, lora_rank=2, guidance_scale=3.0)
    units = shard_units(backbone)
    assert {id(u) for u in units} == {id(m) for d in backbone.denoisers for m in d.blocks}
    cost = CostModel(backbone)
    expert = sum(p.numel() * 4 for p in backbone.denoiser.parameters())  # float32, LoRA included
    text = sum(p.numel() * 4 for p in backbone.prompt_encoder.text_encoder.parameters())
    lora = sum(p.numel() * 4 for p in backbone.trainable_parameters())
    assert cost.fixed().details["denoiser"] == 2 * expert - lora  # both experts, LoRA counted apart
    assert cost.fixed().details["text_encoder"] == text
    sharded = CostModel(backbone, processes=4, sharding="fsdp").fixed().details
    blocks = sum(p.numel() * 4 for u in units for p in u.parameters() if not p.requires_grad)
    assert sharded["denoiser"] == 2 * expert - lora - blocks + -(-blocks // 4)  # each root whole
    # a call is traced once per expert; the meta twin built from the configs predicts the same
    meta = meta_backbone(tiny_model_dir(A14B), **tiny_options(A14B, guidance_scale=3.0))
    meta.options.lora_rank = 2
    assert next(meta.denoiser_2.parameters()).device.type == "meta"
    real, planned = CostModel(backbone), CostModel(meta, device="cpu")
    shape = real.default_shape(2)
    assert real._call_steps() == [2, 3]  # the middle step 2 (t = 861, low noise) and 3 (t = 961, high)
    assert real.call(shape).trace.saved == planned.call(shape).trace.saved > 0
    assert real.fixed().trainable == planned.fixed().trainable > 0


# Two gloo processes shard both experts of the tiny A14B model (FSDP2) and compare a forward
# pass and the LoRA gradients of predictions at both ends of the chain with the unsharded model.
FSDP_WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor
    from rlr_video.backbones import load_backbone
    from rlr_video.backbones.sharding import shard_denoiser

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    path, out, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    backbone = load_backbone(path, **options)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in backbone.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    prompts = ["a red circle moving left", "a blue square"]
    x, cond = backbone.initial_latents(2, torch.Generator().manual_seed(1)), backbone.encode(prompts)

    def run():
        out = torch.cat([backbone.predict(x, step, cond) for step in (backbone.num_steps, 1)])
        return out.detach(), torch.autograd.grad(out.square().mean(), backbone.trainable_parameters())

    plain, plain_grads = run()
    shard_denoiser(backbone)
    sharded, grads = run()
    num = sum(float((a - b).square().sum()) for a, b in zip(grads, plain_grads))
    report = {
        "sharded": [sum(isinstance(p, DTensor) for p in d.parameters()) for d in backbone.denoisers],
        "frozen": [sum(not p.requires_grad for p in d.parameters()) for d in backbone.denoisers],
        "forward_equal": torch.equal(sharded, plain),
        "grad_rel": (num / sum(float(b.square().sum()) for b in plain_grads)) ** 0.5,
    }
    with open(f"{out}/report-rank{dist.get_rank()}.json", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()
    """
)


def test_fsdp_shards_both_experts_and_keeps_their_gradients(tmp_path):
    from test_train_distributed import free_port

    script = tmp_path / "worker.py"
    script.write_text(FSDP_WORKER)
    options = json.dumps(tiny_options(A14B, lora_rank=2, guidance_scale=3.0, guidance_scale_2=2.0))
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    proc = subprocess.run(
        [*launch, str(script), str(tiny_model_dir(A14B)), str(tmp_path), options],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the backward pass through FSDP's hooks sums some contributions in another order: one
    # expert's depth x sqrt(fan-in) per prediction, 3e-5 (measured 0 here)
    rtol = network_rtol(*layers(_backbone(A14B, lora_rank=2).denoiser))
    for rank in (0, 1):
        report = json.loads((tmp_path / f"report-rank{rank}.json").read_text())
        assert report["sharded"] == report["frozen"] and min(report["sharded"]) > 0  # every frozen weight of both
        assert report["forward_equal"]  # the gathered weights are the weights: the same forward, bitwise
        assert report["grad_rel"] <= rtol, (report, rtol)


# ---------------------------------------------------------------------------- presets


def _preset_run(name: str, preset: str, out, *overrides: str):
    """The preset with the tiny model of its layout in place of the hub model, on the CPU."""
    from rlr_video.config import load_config

    size = tiny_options(name)
    model = [f"model.path={tiny_model_dir(name)}", "model.num_steps=4", "model.dtype=float32", "model.lora_rank=2"]
    model += [f"model.height={size['height']}", f"model.width={size['width']}", f"model.frames={size['num_frames']}"]
    model += [f"model.options.max_sequence_length={size['max_sequence_length']}"]
    run = ["reward=brightness", "prompts.path=null", "prompts.items=[a red circle moving left,a blue square]"]
    run += ["train.mixed_precision=no", "train.progress=false", f"train.output_dir={out}", "train.steps=2"]
    run += ["train.checkpoint_every=2", "estimator.zo_samples=1"]
    return load_config(preset, [*model, *run, *overrides])


PRESETS = [(TI2V, "wan22-ti2v-5b-composite"), (A14B, "wan22-a14b-composite")]
# GRPO: groups of two videos of one prompt (the presets' RLR keys are left out of its section)
ESTIMATORS = {"rlr": [], "grpo": ["estimator.name=grpo", "train.group_size=2", "train.batch_size=2"]}


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("name, preset", PRESETS, ids=["ti2v", "a14b"])
def test_each_layout_trains_from_its_preset_on_the_cpu(name, preset, estimator, tmp_path):
    from rlr_video.train import checkpoint as ckpt
    from rlr_video.train.trainer import Trainer

    trainer = Trainer(_preset_run(name, preset, tmp_path / "run", "train.sharding=none", *ESTIMATORS[estimator]))
    assert type(trainer.estimator).name == estimator
    records = trainer.train()
    assert [r["skipped"] for r in records] == [0.0, 0.0] and all(r["grad_norm"] > 0 for r in records)
    saved = ckpt.latest_checkpoint(tmp_path / "run") / ckpt.WEIGHTS_DIR
    fresh = _backbone(name, lora_rank=0, lora_path=str(saved))
    assert len(fresh.trainable_parameters()) == len(trainer.params)
    for a, b in zip(fresh.trainable_parameters(), trainer.params, strict=True):
        assert torch.equal(a, b.cpu())


@pytest.mark.parametrize("name", [TI2V, A14B])
def test_grpo_update_peak_is_predicted(name):
    """One GRPO update (its peak: scoring, the decode without gradients; the KL's reference calls
    with every expert's LoRA off): the uncalibrated prediction within 15% of the measured peak."""
    from rlr_video.config import load_config, run_context
    from rlr_video.memory.planner import Planner
    from rlr_video.memory.probe import measure_peak
    from rlr_video.memory.recompute import MemoryOptions

    backbone = _backbone(name, lora_rank=2, guidance_scale=3.0, num_frames=17)
    randomize_lora(backbone)
    steps = [f"model.num_steps={backbone.num_steps}", "train.batch_size=2"]
    run = run_context(load_config("toy", steps))
    section = load_config("toy", ["estimator.name=grpo", *steps]).estimator
    estimator = section.build(run)
    measured = measure_peak(lambda: estimator.estimate(backbone, Squares(), PROMPTS, torch.Generator().manual_seed(0)))
    planner = Planner(CostModel(backbone, Squares()), batch=2)
    predicted = planner.estimate_workload(section.workload(run), MemoryOptions())
    assert abs(predicted.update / measured.peak - 1) <= 0.15, (predicted.update, measured.peak)
