"""Finding and loading backbones: family detection, packaged names, hub ids, motion
adapters, scheduler conversion, and clear errors for everything that is not a model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from backbone_fixtures import (
    FAMILIES,
    build_tiny_sd_base_and_motion_adapter,
    single_thread,
    tiny_model_dir,
    tiny_options,
)
from test_backbones_lora import probe

from rlr_video.backbones import BackboneLoadError, VideoBackbone, detect_family, load_backbone
from rlr_video.backbones import layout as layout_module
from rlr_video.backbones.layout import Layout
from rlr_video.backbones.schedulers import ddim_transition, flow_transition
from rlr_video.testbed.tiny_model import GUIDANCE_SCALE, NUM_FRAMES, TINY_SHAPES_DIR


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.mark.parametrize("name", FAMILIES)
def test_family_is_detected_from_the_layout(name):
    path = tiny_model_dir(name)
    assert detect_family(Layout(path)) == name
    backbone = load_backbone(path, **tiny_options(name))
    assert isinstance(backbone, VideoBackbone) and backbone.family == name
    assert backbone.num_steps == 4 == backbone.transition.num_steps


def test_explicit_family_must_match_the_layout():
    path = tiny_model_dir("modelscope")
    assert load_backbone(path, family="zeroscope", **tiny_options("modelscope")).family == "modelscope"
    with pytest.raises(BackboneLoadError, match=r"holds a modelscope model.*family='wan'"):
        load_backbone(path, family="wan", **tiny_options("modelscope"))
    with pytest.raises(ValueError, match="unknown backbone family"):
        load_backbone(path, family="sora")


def test_unknown_option_lists_the_known_ones():
    with pytest.raises(TypeError, match=r"unknown backbone option\(s\) \['guidance'\].*guidance_scale"):
        load_backbone(tiny_model_dir("modelscope"), guidance=3.0)
    with pytest.raises(ValueError, match="device 'cuda:99': torch sees"):
        load_backbone(tiny_model_dir("modelscope"), device="cuda:99")
    for name in ("num_steps", "num_frames", "height", "width"):  # 0 is not "the default"
        with pytest.raises(ValueError, match=f"{name}=0 must be >= 1"):
            load_backbone(tiny_model_dir("modelscope"), **{name: 0})


def test_directory_that_is_no_video_layout(tmp_path):
    with pytest.raises(BackboneLoadError, match=rf"{tmp_path}.*no model_index.json.*expected a diffusers"):
        load_backbone(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel"}))
    with pytest.raises(BackboneLoadError, match=r"FluxPipeline.*FluxTransformer2DModel.*expected"):
        load_backbone(tmp_path)
    with pytest.raises(BackboneLoadError, match="expected a diffusers pipeline directory"):
        load_backbone(tmp_path / "model_index.json")


def test_missing_component_names_it(tmp_path):
    copy = shutil.copytree(tiny_model_dir("modelscope"), tmp_path / "ms")
    shutil.rmtree(copy / "text_encoder")
    with pytest.raises(BackboneLoadError, match=rf"{copy} is missing the component 'text_encoder'.*CLIPTextModel"):
        load_backbone(copy, **tiny_options("modelscope"))
    shutil.rmtree(copy / "vae")  # a latent-space UNet3D needs its VAE
    shutil.copytree(tiny_model_dir("modelscope") / "text_encoder", copy / "text_encoder")
    with pytest.raises(BackboneLoadError, match=r"missing the component 'vae'.*pixel-space"):
        load_backbone(copy, **tiny_options("modelscope"))
    (copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BackboneLoadError, match=r"cannot load the component 'unet'"):
        load_backbone(copy, **tiny_options("modelscope"))


def test_hub_id_unreachable_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneLoadError) as info:
        load_backbone("rlr-video-tests/no-such-model")
    message = str(info.value)
    assert message.startswith("'rlr-video-tests/no-such-model' is not a local folder and not in the Hugging Face cache")
    assert "`hf download rlr-video-tests/no-such-model`" in message and "huggingface-cli" not in message
    assert len(message) < 250  # one short line, not the hub's paragraph
    with pytest.raises(BackboneLoadError, match=r"/no/such/dir: no such directory"):
        load_backbone("/no/such/dir")


def test_packaged_tiny_shapes_resolves_to_the_assets_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(layout_module, "assets_dir", lambda: tmp_path)
    with pytest.raises(BackboneLoadError, match=rf"packaged backbone 'tiny-shapes' is not installed.*{tmp_path}"):
        load_backbone("tiny-shapes")
    # The testbed's layout: a 3-channel UNet3D and a one-block VAE (spatial factor 1).
    shutil.copytree(tiny_model_dir("modelscope_pixel_vae"), tmp_path / "tiny-shapes")
    backbone = load_backbone("tiny-shapes", **tiny_options("modelscope_pixel_vae"))
    assert backbone.family == "modelscope" and backbone.latent_shape == (3, 4, 8, 8)
    frames = backbone.decode(backbone.initial_latents(1, torch.Generator().manual_seed(0)))
    assert frames.shape == (1, backbone.num_frames, 3, backbone.height, backbone.width)


def test_the_shipped_tiny_shapes_model_loads():
    backbone = load_backbone("tiny-shapes", num_steps=2)
    frames = backbone.decode(backbone.initial_latents(1, torch.Generator().manual_seed(0)))
    # by name it samples as it was trained and evaluated, not with TextToVideoSDPipeline's 16
    # frames and guidance 9 (layout.PACKAGED_DEFAULTS must agree with the testbed's constants)
    assert frames.shape == (1, NUM_FRAMES, 3, 16, 16) and backbone.guidance_scale == GUIDANCE_SCALE == 1.0
    assert backbone.transition.prediction_type == "v_prediction"  # read from its scheduler config
    assert load_backbone(TINY_SHAPES_DIR, num_steps=2).latent_shape[1] == 8  # by its folder too
    assert load_backbone("tiny-shapes", num_steps=2, num_frames=16, guidance_scale=4.0).latent_shape[1] == 16


def test_sd_base_with_motion_adapter_is_animatediff(tmp_path):
    """An SD-1.5 base plus ``motion_adapter=`` is the AnimateDiffPipeline layout's model."""
    base, adapter = build_tiny_sd_base_and_motion_adapter(tmp_path)
    combined = load_backbone(base, motion_adapter=str(adapter), **tiny_options("animatediff"))
    saved = load_backbone(tiny_model_dir("animatediff"), **tiny_options("animatediff"))
    assert combined.family == "animatediff"
    assert torch.equal(probe(combined), probe(saved))
    with pytest.raises(BackboneLoadError, match=r"image model.*motion_adapter="):
        load_backbone(base)
    with pytest.raises(BackboneLoadError, match=r"is a MotionAdapter.*motion_adapter="):
        load_backbone(adapter)


def test_shipped_schedulers_are_converted_to_the_chain_samplers():
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    # Wan's hub repos ship UniPC with flow sigmas: the same shifted schedule, Euler steps.
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    a, b = flow_transition(unipc, 6, 0.5), flow_transition(euler, 6, 0.5)
    assert torch.equal(a.sigmas, b.sigmas) and torch.equal(a.timesteps, b.timesteps)
    assert not torch.equal(flow_transition(euler, 6, 0.5, shift=5.0).sigmas, b.sigmas)
    with pytest.raises(ValueError, match="no flow-matching scheduler"):
        flow_transition(DDIMScheduler(), 6, 0.5)
    # Zeroscope ships DPM++: the chain is DDIM over the same betas and spacing.
    dpm = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", steps_offset=1)
    ddim = ddim_transition(dpm, 5, 1.0)
    reference = ddim_transition(DDIMScheduler(beta_schedule="scaled_linear", steps_offset=1), 5, 1.0)
    assert torch.equal(ddim.alphas_cumprod, reference.alphas_cumprod)
    assert torch.equal(ddim.timesteps, reference.timesteps)


def test_video_sizes_are_checked():
    with pytest.raises(ValueError, match=r"num_frames=4 must be 1 \+ a multiple of 4"):
        load_backbone(tiny_model_dir("wan"), **tiny_options("wan", num_frames=4))
    with pytest.raises(ValueError, match=r"height=17.*multiples of 2"):
        load_backbone(tiny_model_dir("modelscope"), **tiny_options("modelscope", height=17, width=16))
    # CogVideoX's VAE turns 2 latent frames into 8 frames, not 5: only 1 + 8k frames decode as asked.
    with pytest.raises(ValueError, match=r"num_frames=5 gives 2 latent frames.*1 \+ 8k"):
        load_backbone(tiny_model_dir("cogvideox"), **tiny_options("cogvideox", num_frames=5))
    backbone = load_backbone(tiny_model_dir("cogvideox"), **tiny_options("cogvideox", num_frames=17))
    assert backbone.latent_shape[0] == 5
    assert backbone.decode(backbone.initial_latents(1, torch.Generator())).shape[1] == 17
