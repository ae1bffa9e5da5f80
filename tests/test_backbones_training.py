"""Training through the diffusers backbones: RLR's gradients reach exactly the LoRA
weights, gradient checkpointing changes memory and not gradients, dropout stays off."""

from __future__ import annotations

import pytest
import torch
from backbone_fixtures import FAMILIES, single_thread, tiny_model_dir, tiny_options
from test_backbones_lora import PROMPTS, randomize_lora
from tolerances import assert_rel_close, layers, network_rtol

from rlr_video.backbones import load_backbone
from rlr_video.estimators import RLR


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


class Brightness:
    """Mean brightness of the video: the simplest differentiable reward."""

    name = "brightness"
    differentiable = True

    def __call__(self, frames: torch.Tensor, prompts) -> torch.Tensor:
        return frames.mean(dim=(1, 2, 3, 4))


@pytest.mark.parametrize("name", FAMILIES)
def test_rlr_gives_finite_nonzero_gradients_to_lora_only(name):
    backbone = load_backbone(tiny_model_dir(name), **tiny_options(name, lora_rank=2, guidance_scale=3.0))
    assert all(backbone.transition.noise_std(t) > 0 for t in range(2, backbone.num_steps + 1))
    params = backbone.trainable_parameters()
    lora_ids = {id(p) for p in params}
    others = [p for m in backbone._models() for p in m.parameters() if id(p) not in lora_ids]
    assert params and others
    assert all(p.requires_grad and p.dtype == torch.float32 for p in params)
    assert not any(p.requires_grad for p in others)

    stats = RLR(h=2, zo="latent_lr").estimate(backbone, Brightness(), PROMPTS, torch.Generator().manual_seed(0)).stats

    assert all(isinstance(v, float) for v in stats.values())
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in params)
    assert stats["grad_norm"] > 0 and stats["fo_norm"] > 0 and stats["ho_norm"] > 0
    # LoRA starts with B = 0, so the gradient lands on B first; most B matrices get one.
    b_grads = [p.grad for n, p in backbone.denoiser.named_parameters() if ".lora_B." in n]
    assert sum(bool(g.abs().sum() > 0) for g in b_grads) > len(b_grads) // 2
    assert all(p.grad is None for p in others)


def _lora_grads(backbone, seed: int = 0) -> list[torch.Tensor]:
    cond = backbone.encode(PROMPTS)
    x = backbone.initial_latents(len(PROMPTS), torch.Generator().manual_seed(1))
    torch.manual_seed(seed)  # the dropout masks, when dropout is on
    # a mixture of experts: the noisiest step and a late one, each expert runs once
    steps = (2,) if len(backbone.denoisers) == 1 else (backbone.num_steps, 2)
    out = torch.cat([backbone.predict(x, step, cond) for step in steps])
    return list(torch.autograd.grad(out.square().mean(), backbone.trainable_parameters()))


def _flatten(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", FAMILIES)
def test_gradient_checkpointing_gives_the_same_gradients(name):
    path = tiny_model_dir(name)
    plain = load_backbone(path, **tiny_options(name, lora_rank=2))
    ckpt = load_backbone(path, **tiny_options(name, lora_rank=2, gradient_checkpointing=True))
    randomize_lora(plain)
    randomize_lora(ckpt)
    # checkpointing recomputes the same forward ops on the same shapes, and the backward runs the
    # same ops in the same order (each LoRA weight is used once): bitwise
    assert _same(_lora_grads(ckpt), _lora_grads(plain))


def _wake_temporal_convs(unet) -> None:
    """UNet3D initialises each TemporalConvLayer's last conv to zero (an identity block),
    which would hide its dropout; random weights make the dropout matter."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("conv4.3"):  # Sequential(GroupNorm, SiLU, Dropout, Conv3d)[-1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * 0.1)


def test_unet3d_block_checkpointing_recomputes_blocks_and_handles_dropout():
    """UNet3D has no checkpointing in diffusers: ours wraps each block. The blocks' insides
    run again in backward, and with dropout on (seeded) the gradients still agree."""
    path = tiny_model_dir("modelscope")
    plain = load_backbone(path, **tiny_options("modelscope", lora_rank=2, train_mode=True))
    ckpt = load_backbone(path, **tiny_options("modelscope", lora_rank=2, train_mode=True, gradient_checkpointing=True))
    for backbone in (plain, ckpt):
        randomize_lora(backbone)
        _wake_temporal_convs(backbone.denoiser)
    calls = []
    ckpt.denoiser.down_blocks[0].resnets[0].register_forward_hook(lambda *a: calls.append(1))
    grads = _lora_grads(ckpt, seed=5)
    assert len(calls) == 2, "a checkpointed block runs once forward and once in backward"
    assert _same(grads, _lora_grads(plain, seed=5))  # the same ops and dropout masks: bitwise, as above
    # other dropout masks move the gradient by about its own norm
    other_masks = _flatten(_lora_grads(plain, seed=6)) - _flatten(grads)
    assert float(other_masks.norm()) > 0.1 * float(_flatten(grads).norm()), "dropout is on"
    calls.clear()
    with torch.no_grad():  # sampling never pays for recomputation
        ckpt.predict(ckpt.initial_latents(2, torch.Generator().manual_seed(0)), 2, ckpt.encode(PROMPTS))
    assert len(calls) == 1


def test_dropout_is_off_unless_train_mode():
    path = tiny_model_dir("modelscope")
    backbone = load_backbone(path, **tiny_options("modelscope"))
    assert not backbone.denoiser.training
    assert not any(m.training for m in backbone.denoiser.modules())
    x = backbone.initial_latents(2, torch.Generator().manual_seed(0))
    cond = backbone.encode(PROMPTS)
    with torch.no_grad():
        assert torch.equal(backbone.predict(x, 3, cond), backbone.predict(x, 3, cond))
    assert load_backbone(path, **tiny_options("modelscope", train_mode=True)).denoiser.training


def test_conditioning_selects_a_sub_batch():
    """Estimators may replay part of a batch: ``cond.select`` keeps the CFG rows aligned."""
    backbone = load_backbone(tiny_model_dir("wan"), **tiny_options("wan", guidance_scale=3.0))
    cond = backbone.encode(PROMPTS)
    x = backbone.initial_latents(len(PROMPTS), torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = backbone.predict(x, 3, cond)
        part = backbone.predict(x[1:], 3, cond.select([1]))
    assert cond.select(slice(1, 2)).prompts == [PROMPTS[1]]
    # one video's denoiser call against two: sums in another order on some CPUs, a network this
    # deep (3e-5); measured 4e-7. The other prompt's row is 1.4 away.
    assert_rel_close(part, full[1:], network_rtol(*layers(backbone.denoiser)), "a sub-batch's prediction")
    with pytest.raises(ValueError, match="conditioning for 1 prompts"):
        backbone.predict(x, 3, cond.select([0]))
