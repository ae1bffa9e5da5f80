"""Frame-chunked gradient checkpointing: the same gradients as the plain computation for every
backbone family and the toy (dropout included), chunks really run, and everything is undone."""

from __future__ import annotations

import pytest
import torch
from backbone_fixtures import FAMILIES, single_thread, tiny_model_dir, tiny_options
from test_backbones_lora import PROMPTS, randomize_lora
from test_backbones_training import _wake_temporal_convs
from tolerances import assert_rel_close, layers, network_rtol

from rlr_video.backbones import load_backbone
from rlr_video.backbones.family import family_of
from rlr_video.backbones.toy import ToyBackbone
from rlr_video.chain import replay, rollout
from rlr_video.estimators import RLR
from rlr_video.memory.probe import measure_peak
from rlr_video.memory.recompute import MemoryOptions, memory_options
from rlr_video.memory.units import denoiser_units


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


class Squares:
    """A differentiable pixel reward with a non-trivial gradient."""

    name = "squares"
    differentiable = True

    def __call__(self, frames: torch.Tensor, prompts) -> torch.Tensor:
        return (frames - 0.3).square().mean(dim=(1, 2, 3, 4))


class ChunkedReward(Squares):
    """Looks like a zoo reward: ``chunk_size`` and ``checkpoint`` options."""

    chunk_size, checkpoint = 16, False


def _grads(backbone, options: dict, seed: int = 0, start: int = 2) -> list[torch.Tensor]:
    """Gradients of the reward of x_0 replayed from x_start (two denoiser calls, the decoder
    and the reward: the FO / HO backprop segment) under ``options``."""
    params = backbone.trainable_parameters()
    cond = backbone.encode(PROMPTS)
    torch.manual_seed(0)  # the same chain every time, dropout or not
    traj = rollout(backbone, cond, torch.Generator().manual_seed(1), len(PROMPTS))
    with memory_options(backbone, **options):
        torch.manual_seed(seed)  # dropout masks, when dropout is on
        with torch.enable_grad():
            x0 = replay(backbone, cond, traj, start, 0, checkpoint=options.get("checkpoint") == "call")
            reward = Squares()(backbone.decode(x0), PROMPTS).sum()
            return list(torch.autograd.grad(reward, params))


def _rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b)) / max(float(y.abs().max()) for y in b)


def _segment_rtol(backbone, calls: int = 2) -> float:
    """Chunks run the denoiser's frame-local units and the decoder on fewer rows at a time, which
    may sum in another order (kernels pick their blocking by shape): the depth x sqrt(fan-in)
    bound of the segment, ``calls`` denoiser calls and the decoder."""
    (denoiser, fan_in), vae = layers(backbone.denoiser), getattr(backbone, "vae", None)
    decoder = layers(vae.decoder) if vae is not None else (1, backbone.latent_shape[0])
    return network_rtol(calls * denoiser + decoder[0], max(fan_in, decoder[1]))


SETTINGS = [
    {"checkpoint": "call"},
    {"checkpoint": "block"},
    {"checkpoint": "block", "frame_chunk": 3, "decode_chunk": 1},
    {"checkpoint": "call", "frame_chunk": 1, "decode_chunk": 3},
]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_gets_the_plain_gradients(name):
    backbone = load_backbone(tiny_model_dir(name), **tiny_options(name, lora_rank=2, guidance_scale=3.0))
    randomize_lora(backbone)
    if family_of(backbone).decoder == "causal":
        # Checkpointed, a causal VAE decodes one video at a time, bitwise diffusers' slicing
        # (tests/test_causal_vae.py); so does the plain run here, or the batched decode's other
        # float sums (1e-7 on the frames) would show through the chain's backward pass.
        backbone.vae.enable_slicing()
    # a mixture of experts replays the whole chain, across the boundary: every expert's calls
    start = 2 if len(backbone.denoisers) == 1 else backbone.num_steps
    plain = _grads(backbone, {}, start=start)
    units = denoiser_units(backbone)
    assert units, "every diffusers family has checkpoint units"
    chunked = [m for _, m, kind in units if kind in ("frame", "token")]
    assert chunked, "and frame-local (UNets) or token-local (transformers) ones to chunk"
    calls = []  # a layer inside the first chunked unit runs once per chunk
    inner = next(m for m in chunked[0].modules() if m is not chunked[0] and list(m.parameters(recurse=False)))
    handle = inner.register_forward_hook(lambda *a: calls.append(1))
    for options in SETTINGS:
        calls.clear()
        # measured <= 2.5e-6 of the gradient, bound 2e-4 to 1.4e-3; one of the 4 frames' terms
        # lost would move it by about a quarter
        assert_rel_close(
            _grads(backbone, options, start=start), plain, _segment_rtol(backbone), f"{name} gradients, {options}"
        )
        if options.get("frame_chunk") == 1 and name in ("animatediff", "modelscope"):
            # the rollout's T calls, then 2 calls x (B*F = 2 prompts x 2 CFG x 4 frames = 16
            # one-row chunks) x (forward + call recompute + unit recompute)
            assert len(calls) == backbone.num_steps + 2 * 16 * 3
    handle.remove()
    assert "decode" not in vars(backbone), "the decoder wrapper is removed on exit"


def test_the_toy_backbone_gets_the_plain_gradients():
    backbone = ToyBackbone.create(num_steps=4, latent_shape=(2, 6, 4, 4))
    plain = _grads(backbone, {})
    for options in SETTINGS:
        assert_rel_close(_grads(backbone, options), plain, _segment_rtol(backbone), f"toy gradients, {options}")


def test_dropout_is_replayed_exactly():
    """UNet3D's temporal convolutions have dropout 0.1 (their last conv starts at zero, so it is
    given weights): checkpointed and chunked, a seeded run still gets the plain gradients."""
    backbone = load_backbone(
        tiny_model_dir("modelscope"), **tiny_options("modelscope", lora_rank=2, guidance_scale=3.0, train_mode=True)
    )
    randomize_lora(backbone)
    _wake_temporal_convs(backbone.denoiser)
    plain = _grads(backbone, {}, seed=5)
    rtol = _segment_rtol(backbone)
    assert _rel_err(_grads(backbone, {}, seed=6), plain) > 10 * rtol, "dropout is on"  # 0.12
    for options in SETTINGS:
        assert_rel_close(_grads(backbone, options, seed=5), plain, rtol, f"gradients with dropout, {options}")


def test_sampling_without_gradients_runs_the_plain_forward():
    backbone = load_backbone(tiny_model_dir("animatediff"), **tiny_options("animatediff", lora_rank=2))
    resnet = backbone.denoiser.down_blocks[0].resnets[0]
    calls = []
    resnet.register_forward_hook(lambda *a: calls.append(1))
    with memory_options(backbone, checkpoint="call", frame_chunk=1):
        rollout(backbone, backbone.encode(PROMPTS), torch.Generator().manual_seed(0), len(PROMPTS))
    assert len(calls) == backbone.num_steps  # one call per step, no chunks


def test_options_are_applied_and_restored():
    backbone = load_backbone(tiny_model_dir("modelscope"), **tiny_options("modelscope", lora_rank=2))
    estimator = RLR(h=2)
    reward = ChunkedReward()
    with memory_options(backbone, "call", 2, reward=reward, estimator=estimator) as handle:
        assert estimator.checkpoint_calls and reward.checkpoint and reward.chunk_size == 2
        assert "decode" in vars(backbone) and handle.applied["units"] > 0
    assert not estimator.checkpoint_calls and not reward.checkpoint and reward.chunk_size == 16
    assert "decode" not in vars(backbone)
    with pytest.raises(ValueError, match="checkpoint='sometimes'"):
        MemoryOptions("sometimes")
    with pytest.raises(ValueError, match="frame_chunk=0"):
        MemoryOptions("block", 0)


def test_a_causal_vae_is_checkpointed_per_decoder_step_and_restored():
    backbone = load_backbone(tiny_model_dir("wan"), **tiny_options("wan", lora_rank=2))
    with memory_options(backbone, "call") as handle:
        assert backbone.decode_checkpoint_chunk == 1 and handle.applied["decode"] == "per step"
        assert "decode" not in vars(backbone)  # decode itself is not wrapped
    assert backbone.decode_checkpoint_chunk is None and "decode_checkpoint_chunk" not in vars(backbone)
    with memory_options(backbone, "none"):
        assert backbone.decode_checkpoint_chunk is None


def test_rlr_with_checkpointed_calls_gives_the_same_estimate():
    backbone = ToyBackbone.create(num_steps=6)
    params = backbone.trainable_parameters()
    grads = []
    for flag in (False, True):
        for p in params:
            p.grad = None
        RLR(h=3, checkpoint_calls=flag).estimate(backbone, Squares(), PROMPTS, torch.Generator().manual_seed(3))
        grads.append([p.grad.clone() for p in params])
    # non-reentrant checkpointing keeps the graph and only recomputes what it saved: the same ops
    # in the same order, the same accumulation into p.grad; bitwise (on AVX-512 and AVX2 kernels)
    assert all(torch.equal(a, b) for a, b in zip(grads[1], grads[0], strict=True))


def test_checkpointing_and_chunks_cut_the_peak():
    """The backprop segment's measured peak: call checkpointing frees the replayed calls'
    activations; chunks and units cut the rest."""
    backbone = load_backbone(tiny_model_dir("modelscope"), **tiny_options("modelscope", lora_rank=2, num_frames=8))
    randomize_lora(backbone)
    peaks = {}
    for label, options in {"plain": {}, "call": {"checkpoint": "call"}, "chunked": SETTINGS[3]}.items():
        peaks[label] = measure_peak(lambda options=options: _grads(backbone, options, start=3)).peak
    assert peaks["call"] < 0.7 * peaks["plain"]
    assert peaks["chunked"] < 0.5 * peaks["call"]
