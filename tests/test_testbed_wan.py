"""tiny-shapes-wan: the flow-matching testbed model in diffusers' Wan layout.

Random-weight components are built from the configs that ``tools/testbed/pretrain_tiny_shapes_wan.py``
trains, saved with ``save_pretrained`` and loaded through ``WanPipeline.from_pretrained``; the
shipped weights are loaded both ways (diffusers' pipeline and ``load_backbone``) and sampled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlr_video.backbones import load_backbone
from rlr_video.chain import rollout
from rlr_video.testbed import scorer, shapes
from rlr_video.testbed import tiny_wan as tw

PROMPTS = ["a red circle moving left on a black background", "a blue triangle standing still on a noisy background"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    yield


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-shapes-wan")
    tw.make_pipeline(tw.build_components(folder / "tokenizer")).save_pretrained(str(folder), safe_serialization=True)
    return folder


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def test_the_testbed_renders_and_scores_nine_frames_of_32_pixels() -> None:
    """9 frames (1 + 2k for the 2x causal VAE, 1 + 4k for Wan's) keep every shape in frame and move it as far as
    8 frames do; the scorer reads them exactly, speed words included."""
    batch = shapes.make_batch(150, 3, "all", frames=9, resolution=32, detailed_captions=True)
    assert batch.videos.shape == (150, 9, 3, 32, 32)
    scores = scorer.score_batch(batch.videos, batch.captions)
    for key in ("valid", "colour", "shape", "direction", "size_ok", "speed_ok"):
        assert scores[key].mean() == 1.0, key
    moving = [s for s in batch.specs if s.direction != "still"]
    travel = [s.speed * 8 for s in moving]  # over the clip, fraction of the width
    lo, hi = (7 * v for v in shapes.SPEED_RANGE)  # as far as an 8-frame clip moves
    assert lo <= min(travel) and max(travel) <= hi
    assert shapes.speed_scale(8) == 1.0 == shapes.speed_scale(5) and shapes.speed_scale(9) == 7 / 8


def test_random_pipeline_saves_and_loads_like_a_hub_model(random_folder) -> None:
    index = json.loads((random_folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKLWan"]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert not list(random_folder.rglob("*.bin"))
    pipe = tw.load_pipeline(random_folder)
    assert pipe.scheduler.config.shift == tw.FLOW_SHIFT
    video = tw.sample(pipe, PROMPTS, num_inference_steps=2)
    assert video.shape == (2, tw.NUM_FRAMES, 3, tw.RESOLUTION, tw.RESOLUTION)
    assert float(video.min()) >= 0.0 and float(video.max()) <= 1.0


def test_training_encodes_prompts_like_the_wan_pipeline(random_folder) -> None:
    """The masked encoding of training (tokens cached) is WanPipeline's, empty prompt included."""
    pipe = tw.load_pipeline(random_folder)
    prompts = [*PROMPTS, ""]
    ours = tw.encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts, cache={})
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(
            prompts, do_classifier_free_guidance=False, max_sequence_length=tw.MAX_SEQUENCE_LENGTH
        )
    assert torch.equal(ours.detach(), theirs)
    assert ours[2, 2:].abs().max() == 0  # the empty prompt: BOS, EOS, then zeros


def test_flow_matching_target_is_what_the_sampler_reads() -> None:
    """Fed the exact training target v = eps - x0 at x_s = (1 - s) x0 + s eps, the scheduler's
    Euler step lands on the same interpolation at the next sigma, and x_s - s v is x0."""
    scheduler = tw.build_scheduler()
    scheduler.set_timesteps(7)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 8, 5, 16, 16, generator=gen), torch.randn(2, 8, 5, 16, 16, generator=gen)
    v = eps - x0
    for i in (0, 3, 6):
        s, s_next = scheduler.sigmas[i], scheduler.sigmas[i + 1]
        xs = (1 - s) * x0 + s * eps
        scheduler._step_index = i
        stepped = scheduler.step(v, scheduler.timesteps[i], xs).prev_sample
        # float32 rounding of a few multiply-adds of values up to ~|x0| + |eps| (< 12 here)
        bound = 8 * torch.finfo(torch.float32).eps * float((x0.abs() + eps.abs()).max())
        assert (stepped - ((1 - s_next) * x0 + s_next * eps)).abs().max() <= bound
        assert (xs - s * v - x0).abs().max() <= bound


def test_shipped_tiny_shapes_wan_loads_both_ways() -> None:
    folder = tw.TINY_SHAPES_WAN_DIR
    assert _folder_mb(folder) <= 15
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    pipe = tw.load_pipeline()
    assert type(pipe).__name__ == "WanPipeline"
    video = tw.sample(pipe, PROMPTS[:1], num_inference_steps=2)
    assert video.shape == (1, tw.NUM_FRAMES, 3, tw.RESOLUTION, tw.RESOLUTION)
    backbone = load_backbone("tiny-shapes-wan", num_steps=2, lora_rank=0)
    assert (backbone.num_frames, backbone.height, backbone.width) == (tw.NUM_FRAMES, tw.RESOLUTION, tw.RESOLUTION)
    vae = pipe.vae.config
    latent_frames = (tw.NUM_FRAMES - 1) // vae.scale_factor_temporal + 1
    latent_size = tw.RESOLUTION // vae.scale_factor_spatial
    assert backbone.latent_shape == (vae.z_dim, latent_frames, latent_size, latent_size)
    assert backbone.guidance_scale == 1.0
    assert type(backbone.transition).__name__ == "FlowSDETransition"


def test_the_cost_model_sees_the_latents_of_its_2x_vae() -> None:
    """The memory planner's latent shape for another video size is the one the model loads with
    at that size: 1 + 2k frames make 1 + k latent frames here, not Wan's 1 + 4k -> 1 + k (the
    planner under-predicted this model's peaks by 30-45% when it took the family's ratio)."""
    backbone = load_backbone("tiny-shapes-wan", num_steps=2, lora_rank=0)
    for frames, height, width in [(17, 32, 32), (5, 48, 16), (33, 16, 64)]:
        other = load_backbone(
            "tiny-shapes-wan", num_steps=2, lora_rank=0, num_frames=frames, height=height, width=width
        )
        assert backbone.latent_shape_for(frames, height, width) == other.latent_shape
    assert backbone.latent_shape_for(17, 32, 32)[1] == 9


def test_shipped_model_rollout_at_noise_level_zero_is_the_wan_pipeline() -> None:
    """load_backbone's chain at noise level 0, then decode, is WanPipeline from the same folder
    and the same initial latents (the Euler ODE of FlowMatchEulerDiscreteScheduler)."""
    steps = 6
    backbone = load_backbone("tiny-shapes-wan", num_steps=steps, eta=0.0, lora_rank=0)
    traj = rollout(backbone, backbone.encode(PROMPTS), torch.Generator().manual_seed(0), len(PROMPTS))
    ours_frames = backbone.decode(traj.sample)
    pipe = tw.load_pipeline()
    x_T = traj.latents[-1].clone()
    theirs_latents = tw.sample(pipe, PROMPTS, steps, latents=x_T.clone(), output_type="latent")
    theirs_frames = tw.sample(pipe, PROMPTS, steps, latents=x_T.clone())
    # Tolerance 0, derived: both run the same modules on the same inputs in the same order (one
    # thread, batch of 2, no guidance). The one step computed differently is x + (s' - s) v: here
    # s' - s of two float32 sigmas is taken in float64 (exact: their difference needs at most 25
    # bits) and rounded once to float32 when it scales a float32 tensor; there it is a float32
    # subtraction, which rounds the same exact difference once. Checked for every step:
    sigmas = backbone.transition.sigmas.float()
    pairs = zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True)
    float64_steps = torch.tensor([b - a for a, b in pairs], dtype=torch.float64)
    assert torch.equal(float64_steps.float(), sigmas[1:] - sigmas[:-1])
    assert torch.equal(traj.sample, theirs_latents)
    assert torch.equal(ours_frames, theirs_frames)
    assert ours_frames.shape == (2, tw.NUM_FRAMES, 3, tw.RESOLUTION, tw.RESOLUTION)


def test_the_preset_trains_two_steps_on_the_cpu(tmp_path) -> None:
    """`rlr-video train tiny-shapes-wan` (the shipped model, the preset's chain, estimator and guard) runs
    two updates of one group of four videos (its group size) in a fresh process, well within the limit."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlr_video", "train", "tiny-shapes-wan", "train.steps=2", "train.batch_size=4"]
    cmd += [f"train.output_dir={out}", "train.progress=false", "train.eval.videos=3", "train.eval.batch_size=3"]
    limit = 600
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the in-process tests (see conftest.py)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env, cwd=tmp_path)
    seconds = time.time() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    updates = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in updates] == [1, 2]
    assert all(0 <= r["reward_mean"] <= 1 and r["grad_norm"] > 0 for r in updates)
    # the preset's guard: the ground truth on held-out videos before the first update and after the last
    assert [(r["step"], 0 <= r["eval/truth"] <= 1) for r in rows if "eval/truth" in r] == [(0, True), (2, True)]
    assert seconds < limit / 3, f"{seconds:.0f}s"
