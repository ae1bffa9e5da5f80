"""Rollout stores what replay needs; replay reproduces the rollout exactly."""

import pytest
import torch

from rlr_video.backbones import VideoBackbone
from rlr_video.backbones.toy import ToyBackbone
from rlr_video.chain import replay, rollout
from rlr_video.estimators.pathwise import sample_with_grad


@pytest.fixture(scope="module")
def backbone():
    return ToyBackbone.create(num_steps=6, eta=1.0)


def test_toy_backbone_implements_the_protocol(backbone):
    assert isinstance(backbone, VideoBackbone)
    frames = backbone.decode(backbone.initial_latents(3, torch.Generator().manual_seed(0)))
    assert frames.shape == (3, 2, 3, 4, 4) and frames.min() >= 0 and frames.max() <= 1


def test_replay_reproduces_every_span_bit_for_bit(backbone):
    cond = backbone.encode(["a red circle moving left", "a blue square"])
    traj = rollout(backbone, cond, torch.Generator().manual_seed(1), 2)
    assert traj.num_steps == 6 and all(traj.stds[t] > 0 for t in range(1, 7))
    for start in range(6, 0, -1):
        for stop in range(start, -1, -1):
            with torch.enable_grad():
                x = replay(backbone, cond, traj, start, stop)
            assert torch.equal(x, traj.latents[stop]), (start, stop)
            assert x.dtype == traj.latents[stop].dtype and x.device == traj.latents[stop].device


def test_same_seed_same_chain_and_grad_sampler_agrees(backbone):
    cond = backbone.encode(["a green triangle"])
    a = rollout(backbone, cond, torch.Generator().manual_seed(7), 1)
    b = rollout(backbone, cond, torch.Generator().manual_seed(7), 1)
    assert all(torch.equal(x, y) for x, y in zip(a.latents, b.latents))
    with torch.enable_grad():
        x0 = sample_with_grad(backbone, cond, torch.Generator().manual_seed(7), 1, grad_steps=3)
    assert torch.equal(x0, a.sample) and x0.requires_grad


def test_replay_rejects_bad_spans(backbone):
    traj = rollout(backbone, backbone.encode(["x"]), torch.Generator().manual_seed(0), 1)
    with pytest.raises(ValueError, match="from step 2 to 4"):
        replay(backbone, None, traj, 2, 4)
