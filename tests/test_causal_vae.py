"""Causal 3D VAEs decoded a few latent frames per checkpoint: the frames and gradients of
``vae.decode`` one video at a time (diffusers' slicing), with less kept for the backward pass."""

from __future__ import annotations

import pytest
import torch
from backbone_fixtures import tiny_model_dir, tiny_options
from tolerances import EPS64, assert_rel_close, layers, network_rtol, sum_atol

from rlr_video.backbones import load_backbone
from rlr_video.backbones.causal_vae import decode_profile
from rlr_video.memory.meta import meta_twin

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

# 17 frames: 5 latent frames; Wan decodes them one per step, CogVideoX as groups of 3 and 2,
# HunyuanVideo as temporal tiles of latent frames 0-4 and 3-4 (its VAE's tiles of 16 frames every 12).
FRAMES = 17
# Wan 2.1's VAE, and Wan 2.2's (TI2V-5B: patch_size 2, is_residual, 48 latent channels); and the
# trained Wan VAE of the shipped tiny-shapes-wan (2x in time: 9 frames are 5 latent frames).
FAMILIES = ["wan", "wan22-ti2v", "cogvideox", "hunyuanvideo", "tiny-shapes-wan"]
STEP_FRAMES = {
    "wan": [1] * 5,
    "wan22-ti2v": [1] * 5,
    "cogvideox": [3, 2],
    "hunyuanvideo": [5, 2],
    "tiny-shapes-wan": [1] * 5,
}


def _channels(backbone) -> int:
    cfg = backbone.vae.config
    return cfg.z_dim if "z_dim" in cfg else cfg.latent_channels


def _load(family: str):
    """The family's tiny random-weight model at ``FRAMES`` frames, or the shipped trained
    tiny-shapes-wan at the 9 frames it was trained on."""
    if family == "tiny-shapes-wan":
        return load_backbone(family, num_steps=2)
    return load_backbone(tiny_model_dir(family), **tiny_options(family, num_frames=FRAMES))


def _decode_with_grad(backbone, latents, chunk):
    """Frames, the gradient of a fixed weighting of them, and the bytes autograd saved."""
    backbone.decode_checkpoint_chunk = chunk
    x = latents.clone().requires_grad_(True)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        frames = backbone.decode(x)
    weights = torch.linspace(-1, 1, frames.numel()).reshape(frames.shape)
    (grad,) = torch.autograd.grad((frames * weights).sum(), x)
    return frames.detach(), grad, sum(saved)


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_decode_equals_the_plain_decode_and_keeps_less(family):
    backbone = _load(family)
    latents = backbone.initial_latents(2, torch.Generator().manual_seed(0))
    batched, batched_grad, saved = _decode_with_grad(backbone, latents, None)
    backbone.vae.enable_slicing()  # diffusers' own decoding one video at a time, as the chunks do
    frames, grad, _ = _decode_with_grad(backbone, latents, None)
    assert frames.shape[:2] == (2, backbone.num_frames)
    # A batch of one sums in another order than a batch of two (on some CPUs): the decoder's
    # rounding, its conv layers deep with their largest fan-in (Wan 33 x 432, CogVideoX 67 x 216:
    # ~1e-4). Measured ~5e-6 (Wan) and ~4e-7 (CogVideoX) here, with oneDNN limited to AVX2 too;
    # an off-by-one frame or a frame's term left out moves the gradient by 0.1-0.4.
    rtol = network_rtol(*layers(backbone.vae.decoder))
    assert_rel_close(frames, batched, rtol, f"{family} frames decoded one video at a time")
    assert_rel_close(grad, batched_grad, rtol, f"{family} latent gradient decoded one video at a time")
    steps = backbone.decode_steps(backbone.vae, torch.zeros(1, _channels(backbone), 5, 2, 2)).pieces
    assert [p.shape[2] for p in steps] == STEP_FRAMES[family]
    for chunk in (1, 2):
        chunked, chunked_grad, chunked_saved = _decode_with_grad(backbone, latents, chunk)
        # the chunks run diffusers' own one-video-at-a-time steps, the same ops in the same order
        assert torch.equal(chunked, frames)
        assert torch.equal(chunked_grad, grad)
        # what the checkpoints keep: their inputs and the caches, not the decoder's activations
        assert chunked_saved < saved / 4, (chunked_saved, saved)
    with torch.no_grad():  # without gradients nothing is checkpointed
        assert torch.equal(backbone.decode(latents), frames)


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_profile_on_the_meta_device(family):
    backbone = _load(family)
    twin = meta_twin(backbone.vae)
    z = torch.zeros(3, _channels(backbone), 5, 4, 4, device="meta")
    profile = decode_profile(twin, z, backbone.decode_steps)
    # Wan: 1 + 4 + 4 + 4 + 4 frames; CogVideoX: groups of 3 and 2 latent frames, 9 + 8 frames;
    # HunyuanVideo: overlapping tiles of 5 and 2 latent frames, 17 + 5 frames, blended at the end;
    # tiny-shapes-wan (2x in time): 1 + 2 + 2 + 2 + 2 frames
    frames, largest = {
        "tiny-shapes-wan": (9, 2),
        "wan": (FRAMES, 4),
        "wan22-ti2v": (FRAMES, 4),
        "cogvideox": (FRAMES, 9),
        "hunyuanvideo": (22, 17),
    }[family]
    assert (profile.frames, profile.largest_step) == (frames, largest)
    # the steps' shares added in float64 (sum_atol over them), then one division
    assert profile.share == pytest.approx(largest / frames, rel=sum_atol(profile.steps + 1, 1.0, EPS64))
    # the cache: the last frames of every causal convolution's input, one video's (HunyuanVideo's
    # tiles carry nothing: each is decoded on its own)
    with torch.no_grad():
        real = decode_profile(backbone.vae, torch.zeros(1, _channels(backbone), 5, 4, 4), backbone.decode_steps)
    assert profile.carried == real.carried
    assert (real.carried > 0) == (family != "hunyuanvideo")
