"""LoRA on the diffusers backbones: only LoRA trains, files in the diffusers/PEFT layout,
save -> fresh load -> identical outputs, and the pipelines' own ``load_lora_weights``."""

from __future__ import annotations

import contextlib
import os
import stat

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
from safetensors import safe_open

from rlr_video.backbones import load_backbone
from rlr_video.backbones.lora import save_lora
from rlr_video.chain import rollout

PROMPTS = ["a red circle moving left", "a blue square"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def randomize_lora(backbone, seed: int = 0, scale: float = 0.3) -> None:
    """Give LoRA non-zero weights (B starts at zero, which would make every test trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backbone.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


@torch.no_grad()
def probe(backbone) -> torch.Tensor:
    """One guided prediction on fixed latents at the noisiest step."""
    x = backbone.initial_latents(len(PROMPTS), torch.Generator().manual_seed(1))
    return backbone.predict(x, backbone.num_steps, backbone.encode(PROMPTS))


@pytest.mark.parametrize("name", FAMILIES)
def test_save_fresh_load_identical_outputs(name, tmp_path):
    path = tiny_model_dir(name)
    backbone = load_backbone(path, **tiny_options(name, lora_rank=2, lora_alpha=4))
    base = probe(backbone)
    randomize_lora(backbone)
    tuned = probe(backbone)
    assert not torch.allclose(tuned, base, atol=1e-6), "LoRA weights must change the output"

    file = backbone.save_lora(tmp_path / "lora")
    assert file.name == "pytorch_lora_weights.safetensors"
    prefix = backbone.denoiser_component
    with safe_open(str(file), framework="pt") as f:
        keys = list(f.keys())  # noqa: SIM118
        assert "lora_adapter_metadata" in f.metadata()
    assert keys and all(k.startswith(prefix + ".") for k in keys)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert len(keys) == len(backbone.trainable_parameters())

    # A fresh model without LoRA: the adapter is built from the file's metadata.
    fresh = load_backbone(path, **tiny_options(name, lora_rank=0, lora_path=str(tmp_path / "lora")))
    assert torch.equal(probe(fresh), tuned)
    # A fresh model with an adapter of the same layout: the weights are replaced.
    other = load_backbone(path, **tiny_options(name, lora_rank=2, lora_alpha=4))
    other.load_lora(tmp_path / "lora")
    assert torch.equal(probe(other), tuned)


@pytest.mark.parametrize("name", ["animatediff", "cogvideox", "wan", "ltx"])
def test_pipeline_load_lora_weights_reproduces_our_samples(name, tmp_path):
    """A saved LoRA loads with the family pipeline's ``load_lora_weights`` as the same
    adapter (rank, alpha, targets): the pipeline then samples what our chain samples."""
    backbone = load_backbone(
        tiny_model_dir(name), **tiny_options(name, lora_rank=2, lora_alpha=4, eta=0.0, guidance_scale=3.0)
    )
    randomize_lora(backbone)
    backbone.save_lora(tmp_path / "lora")
    traj = rollout(backbone, backbone.encode(PROMPTS), torch.Generator().manual_seed(0), len(PROMPTS))
    ours = backbone.decode(traj.sample)

    pipe = tiny_pipeline(name)

    def sample():
        latents = pipeline_latents(name, traj.latents[-1].clone())
        kwargs = dict(guidance_scale=3.0, latents=latents, output_type="pt", **pipeline_kwargs(name))
        return pipe(PROMPTS, num_inference_steps=backbone.num_steps, **kwargs).frames

    plain = sample()
    pipe.load_lora_weights(tmp_path / "lora")
    tuned = sample()
    assert float((plain - ours).abs().max()) > 1e-3, "the LoRA must matter for this test to mean anything"
    assert float((tuned - ours).abs().max()) <= 1e-4


def test_lora_of_another_rank_is_a_clear_error(tmp_path):
    backbone = load_backbone(tiny_model_dir("modelscope"), **tiny_options("modelscope", lora_rank=2))
    backbone.save_lora(tmp_path / "lora")
    other = load_backbone(tiny_model_dir("modelscope"), **tiny_options("modelscope", lora_rank=4))
    with pytest.raises(ValueError, match="shape"):
        other.load_lora(tmp_path / "lora")
    with pytest.raises(FileNotFoundError, match="pytorch_lora_weights.safetensors"):
        other.load_lora(tmp_path / "nowhere")
    # lora_path brings its own rank: the default lora_rank=4 does not get in the way
    options = tiny_options("modelscope", lora_path=str(tmp_path / "lora"))
    loaded = load_backbone(tiny_model_dir("modelscope"), **options)
    assert {p.shape[0] for n, p in loaded.denoiser.named_parameters() if "lora_A" in n} == {2}


def test_a_lora_that_does_not_fit_leaves_the_model_as_it_was(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tiny_model_dir("modelscope")
    saved = load_backbone(path, **tiny_options("modelscope", lora_rank=2))
    file = saved.save_lora(tmp_path / "lora")
    model = load_backbone(path, **tiny_options("modelscope", lora_rank=0))
    before = probe(model)
    # The same file less one tensor: injected from its metadata, found short, taken out again.
    tensors = load_file(file)
    with safe_open(str(file), framework="pt") as f:
        metadata = f.metadata()
    tensors.pop(sorted(tensors)[0])
    (tmp_path / "short").mkdir()
    save_file(tensors, tmp_path / "short" / file.name, metadata=metadata)
    with pytest.raises(ValueError, match=r"1 of the model.s \d+ keys missing"):
        model.load_lora(tmp_path / "short")
    assert model.trainable_parameters() == [] and torch.equal(probe(model), before)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / file.name).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt/pytorch_lora_weights.safetensors: not a readable safetensors"):
        model.load_lora(tmp_path / "corrupt")
    model.load_lora(tmp_path / "lora")  # the right file still loads
    assert len(model.trainable_parameters()) == len(saved.trainable_parameters())


def test_lora_targets_and_rank_are_configurable():
    path = tiny_model_dir("modelscope")
    backbone = load_backbone(path, **tiny_options("modelscope", lora_rank=3, lora_targets=["to_q"]))
    names = [n for n, p in backbone.denoiser.named_parameters() if p.requires_grad]
    assert names and all(".to_q.lora_" in n for n in names)
    assert {p.shape[0] for n, p in backbone.denoiser.named_parameters() if "lora_A" in n} == {3}
    with pytest.raises(ValueError, match="match no module"):
        load_backbone(path, **tiny_options("modelscope", lora_targets=["no_such_projection"]))
    assert load_backbone(path, **tiny_options("modelscope", lora_rank=0)).trainable_parameters() == []


def test_half_precision_weights_keep_float32_lora_and_chain():
    backbone = load_backbone(tiny_model_dir("modelscope"), **tiny_options("modelscope", dtype="bf16"))
    assert next(backbone.denoiser.conv_in.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in backbone.trainable_parameters())
    out = probe(backbone)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


def test_weights_of_another_model_are_summarised_not_listed(tmp_path):
    from rlr_video.backbones.toy import ToyBackbone
    from rlr_video.train.model import load_weights, save_weights

    save_weights(ToyBackbone.create(num_steps=4), tmp_path / "toy")  # 6 tensors, named as the toy's
    backbone = load_backbone(tiny_model_dir("modelscope"), **tiny_options("modelscope", lora_rank=2))
    lora_keys = len(backbone.trainable_parameters())
    with pytest.raises(ValueError) as info:
        load_weights(backbone, tmp_path / "toy")
    message = str(info.value)
    assert f"{lora_keys} of the model's {lora_keys} keys missing" in message and "6 unexpected keys" in message
    assert message.count(".lora_A.") + message.count(".lora_B.") <= 3 and len(message) < 800
    backbone.save_lora(tmp_path / "rank2")
    other = load_backbone(tiny_model_dir("modelscope"), **tiny_options("modelscope", lora_rank=4))
    with pytest.raises(ValueError, match=rf"{lora_keys} keys with another shape than the model's \(e.g. \S+ \(2, "):
        other.load_lora(tmp_path / "rank2")


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_lora_files_follow_the_umask_like_any_other_file(tmp_path):
    """safetensors writes 0600 whatever the umask; the LoRA file gets what open() gives."""
    backbone = load_backbone(tiny_model_dir("wan"), **tiny_options("wan", lora_rank=2))
    with umask(0o027):  # not the usual 022, so neither 0600 nor 0644 passes by chance
        (tmp_path / "plain.txt").write_text("a file written the ordinary way")
        files = [
            backbone.save_lora(tmp_path / "diffusers"),  # the pipeline's save_lora_weights
            save_lora(backbone.denoiser, tmp_path / "own", backbone.denoiser_component, None),
        ]
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o640
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o640, file
