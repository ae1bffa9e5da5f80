"""The diffusers backbones on a GPU (skipped without CUDA).

Measured on an H200 (torch 2.11): with TF32 off, rollout + decode equals the pipelines
within 1.3e-6 and the CPU within 1.8e-6; with cuDNN's default TF32 convolutions both
sides still agree with each other, but only to ~3e-4 (and Wan's tiny random VAE differs
from the CPU by 0.08), so the parity check turns TF32 off.
"""

from __future__ import annotations

import pytest
import torch
from backbone_fixtures import FAMILIES, pipeline_kwargs, pipeline_latents, tiny_model_dir, tiny_options, tiny_pipeline
from test_backbones_training import Brightness

from rlr_video.backbones import load_backbone
from rlr_video.chain import rollout
from rlr_video.estimators import RLR

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
PROMPTS = ["a red circle moving left", "a blue square"]


@pytest.fixture
def no_tf32():
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_parity_and_device_independent_seeds(name, no_tf32):
    options = tiny_options(name, eta=0.0, guidance_scale=4.0, lora_rank=0)
    cpu = load_backbone(tiny_model_dir(name), **options)
    gpu = load_backbone(tiny_model_dir(name), **options).to("cuda")
    on_cpu = rollout(cpu, cpu.encode(PROMPTS), torch.Generator().manual_seed(0), 2)
    on_gpu = rollout(gpu, gpu.encode(PROMPTS), torch.Generator().manual_seed(0), 2)
    assert torch.equal(on_gpu.latents[-1].cpu(), on_cpu.latents[-1])  # same seed, same x_T
    ours = gpu.decode(on_gpu.sample)
    pipe = tiny_pipeline(name).to("cuda")
    reference = pipe(
        PROMPTS,
        num_inference_steps=gpu.num_steps,
        guidance_scale=4.0,
        latents=pipeline_latents(name, on_gpu.latents[-1].clone()),
        output_type="pt",
        **pipeline_kwargs(name),
    ).frames
    assert float((ours - reference).abs().max()) <= 1e-4
    assert float((ours.cpu() - cpu.decode(on_cpu.sample)).abs().max()) <= 1e-4


@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_bf16_rlr_with_checkpointing(name):
    backbone = load_backbone(
        tiny_model_dir(name),
        **tiny_options(name, dtype="bf16", device="cuda", lora_rank=2, guidance_scale=3.0, gradient_checkpointing=True),
    )
    params = backbone.trainable_parameters()
    assert all(p.is_cuda and p.dtype == torch.float32 for p in params)
    stats = RLR(h=2).estimate(backbone, Brightness(), PROMPTS, torch.Generator("cuda").manual_seed(0)).stats
    assert stats["grad_norm"] > 0
    assert all(bool(torch.isfinite(p.grad).all()) for p in params)
