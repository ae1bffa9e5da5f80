"""Parity with diffusers: our chain + decode is each family's own pipeline.

Tiny random-weight models of every family, built from the real classes and saved with
``save_pretrained``, are loaded through ``load_backbone(local_dir)``. At eta = 0 (flow noise
level 0) and the same initial latents, ``rollout`` + ``decode`` must equal the pipeline's
output (AnimateDiffPipeline, TextToVideoSDPipeline, CogVideoXPipeline with
CogVideoXDDIMScheduler, WanPipeline with FlowMatchEulerDiscreteScheduler, LTXPipeline).
"""

from __future__ import annotations

import pytest
import torch
from backbone_fixtures import (
    FAMILIES,
    pipeline_kwargs,
    pipeline_latents,
    single_thread,
    tiny_model_dir,
    tiny_options,
    tiny_pipeline,
)

from rlr_video.backbones import load_backbone
from rlr_video.chain import rollout

PROMPTS = ["a red circle moving left", "a blue square"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


TOLERANCE = 1e-4


def _ours(name: str, guidance: float, **options):
    backbone = load_backbone(
        tiny_model_dir(name), **tiny_options(name, eta=0.0, guidance_scale=guidance, lora_rank=0, **options)
    )
    traj = rollout(backbone, backbone.encode(PROMPTS), torch.Generator().manual_seed(0), len(PROMPTS))
    return backbone, traj


@pytest.mark.parametrize("name", [*FAMILIES, "modelscope_pixel_vae"])
def test_rollout_and_decode_equal_the_diffusers_pipeline(name):
    backbone, traj = _ours(name, guidance=4.0, negative_prompt="blurry")
    ours = backbone.decode(traj.sample)
    pipe = tiny_pipeline(name)
    reference = pipe(
        PROMPTS,
        negative_prompt=["blurry"] * len(PROMPTS),
        num_inference_steps=backbone.num_steps,
        guidance_scale=4.0,
        latents=pipeline_latents(name, traj.latents[-1].clone()),
        output_type="pt",
        **pipeline_kwargs(name),
    ).frames
    frames, height, width = backbone.num_frames, backbone.height, backbone.width
    assert ours.shape == reference.shape == (len(PROMPTS), frames, 3, height, width)
    assert float(ours.min()) >= 0.0 and float(ours.max()) <= 1.0
    diff = float((ours - reference).abs().max())
    print(f"{name}: parity max abs diff {diff:.3g}")
    assert diff <= TOLERANCE


def test_parity_without_guidance_single_prompt():
    """guidance_scale <= 1 turns the unconditional branch off, as in the pipelines."""
    backbone, traj = _ours("modelscope", guidance=1.0)
    assert not backbone.encode(["x"]).guided
    pipe = tiny_pipeline("modelscope")
    reference = pipe(
        PROMPTS,
        num_inference_steps=backbone.num_steps,
        guidance_scale=1.0,
        latents=traj.latents[-1].clone(),
        output_type="pt",
        **pipeline_kwargs("modelscope"),
    ).frames
    assert float((backbone.decode(traj.sample) - reference).abs().max()) <= TOLERANCE


def test_pixel_space_unet3d_without_vae():
    """A 3-channel UNet3D and no VAE at all: the chain matches the pipeline's latents
    (the pipeline cannot decode without a VAE); decoding maps [-1, 1] to [0, 1] frames."""
    backbone, traj = _ours("modelscope_pixel", guidance=4.0)
    assert backbone.vae is None and backbone.latent_shape[0] == 3
    pipe = tiny_pipeline("modelscope_pixel")
    assert pipe.vae is None
    reference = pipe(
        PROMPTS,
        num_inference_steps=backbone.num_steps,
        guidance_scale=4.0,
        latents=traj.latents[-1].clone(),
        output_type="latent",
        **pipeline_kwargs("modelscope_pixel"),
    ).frames
    assert float((traj.sample - reference).abs().max()) <= TOLERANCE
    frames = backbone.decode(traj.sample)
    assert frames.shape == (2, backbone.num_frames, 3, backbone.height, backbone.width)
    expected = (traj.sample.permute(0, 2, 1, 3, 4) / 2 + 0.5).clamp(0, 1)
    assert torch.equal(frames, expected)


def test_initial_latents_follow_the_generator_seed():
    backbone = load_backbone(tiny_model_dir("wan"), **tiny_options("wan", lora_rank=0))
    a = backbone.initial_latents(2, torch.Generator().manual_seed(3))
    b = backbone.initial_latents(2, torch.Generator().manual_seed(3))
    assert a.dtype == torch.float32 and a.shape == (2, *backbone.latent_shape)
    assert torch.equal(a, b)
    assert torch.equal(a, torch.randn(a.shape, generator=torch.Generator().manual_seed(3)))
