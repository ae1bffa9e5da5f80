"""The tiny-shapes diffusers pipeline and the shapes CLIP: build, save, load, shapes.

Random-weight models are built from the same configs the tools train, saved with
``save_pretrained`` and loaded through diffusers' / open_clip's own loaders. Tests of the
shipped weights run only when ``rlr_video/assets`` holds them.
"""

from __future__ import annotations

import json

import pytest
import torch

from rlr_video.testbed import shapes
from rlr_video.testbed import tiny_model as tm
from rlr_video.testbed.clip import (
    GRID,
    SHAPES_CLIP_DIR,
    ShapesClip,
    frames_to_sheet,
    load_shapes_clip,
    model_config,
    register_config,
    save_shapes_clip,
    video_clip_folder,
)


def _folder_mb(path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def test_identity_vae_is_the_identity() -> None:
    vae = tm.build_identity_vae()
    x = shapes.make_batch(2, 0, "all").videos.flatten(0, 1) * 2 - 1
    assert vae.config.scaling_factor == 1.0 and vae.config.latent_channels == 3
    with torch.no_grad():
        assert (vae.decode(x).sample - x).abs().max() < 1e-3
        posterior = vae.encode(x).latent_dist
        assert (posterior.mean - x).abs().max() < 1e-3 and posterior.std.max() < 1e-4
        wide = torch.randn(4, 3, 16, 16) * 1.5  # off the data range too
        assert (vae.decode(wide).sample - wide).abs().max() < 2e-3


def test_latent_video_round_trip() -> None:
    video = shapes.make_batch(2, 0).videos
    latents = tm.video_to_latents(video)
    assert latents.shape == (2, 3, 8, 16, 16) and latents.min() >= -1
    assert torch.allclose(tm.latents_to_video(latents), video)


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    return _save_random_pipeline(tmp_path_factory, "unet3d")


def _save_random_pipeline(tmp_path_factory, unet: str):
    folder = tmp_path_factory.mktemp(f"tiny-shapes-{unet}")
    tm.make_pipeline(tm.build_components(folder / "tokenizer", unet=unet)).save_pretrained(
        str(folder), safe_serialization=True
    )
    return folder


@pytest.mark.parametrize(
    ("unet", "pipeline", "unet_class"),
    [("unet3d", "TextToVideoSDPipeline", "UNet3DConditionModel"), ("motion", "AnimateDiffPipeline", "UNetMotionModel")],
)
def test_random_pipeline_saves_and_loads_like_a_hub_model(tmp_path_factory, unet, pipeline, unet_class) -> None:
    saved_pipeline = _save_random_pipeline(tmp_path_factory, unet)
    index = json.loads((saved_pipeline / "model_index.json").read_text())
    assert index["_class_name"] == pipeline
    assert index["unet"] == ["diffusers", unet_class]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["tokenizer"][1] == "CLIPTokenizer"
    assert not list(saved_pipeline.rglob("*.bin")) and list(saved_pipeline.rglob("*.safetensors"))
    pipe = tm.load_pipeline(saved_pipeline)
    assert type(pipe).__name__ == pipeline
    video = tm.sample(pipe, ["a red circle moving left on a black background"] * 2, 1, 2.0)
    assert video.shape == (2, 8, 3, 16, 16)
    assert float(video.min()) >= 0.0 and float(video.max()) <= 1.0


def test_training_denoises_like_the_motion_pipeline(tmp_path) -> None:
    """``denoise`` gives UNetMotionModel the text per frame, as AnimateDiffPipeline does."""
    pipe = tm.make_pipeline(tm.build_components(tmp_path / "tokenizer", unet="motion"))
    prompts = ["a red circle moving left on a black background", "a blue square standing still"]
    embeds = tm.encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)
    latents = torch.randn(2, 3, tm.NUM_FRAMES, 16, 16)
    with torch.no_grad():
        out = tm.denoise(pipe.unet, latents, torch.tensor([500, 500]), embeds)
        second_alone = tm.denoise(pipe.unet, latents[1:], torch.tensor([500]), embeds[1:])
    assert out.shape == latents.shape
    assert torch.allclose(out[1:], second_alone, atol=1e-5)  # each video sees its own caption
    with pytest.raises(ValueError, match="'transformer'"):
        tm.build_unet("transformer")


def test_training_encodes_prompts_like_the_pipeline(saved_pipeline) -> None:
    pipe = tm.load_pipeline(saved_pipeline)
    prompts = ["a red circle moving left on a black background", ""]
    ours = tm.encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts, cache={})
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
    assert torch.allclose(ours, theirs)


def test_shipped_tiny_shapes_loads_through_diffusers() -> None:
    assert _folder_mb(tm.TINY_SHAPES_DIR) <= 20
    assert not list(tm.TINY_SHAPES_DIR.rglob("*.bin")) and not list(tm.TINY_SHAPES_DIR.rglob("*.pt"))
    pipe = tm.load_pipeline()
    assert pipe.unet.config.in_channels == 3 and pipe.unet.config.sample_size == 16
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    video = tm.sample(pipe, ["a green square moving up on a white background"], 1)
    assert video.shape == (1, 8, 3, 16, 16)


def test_frames_to_sheet_tiles_frames_in_order() -> None:
    rows, cols = GRID
    frames = torch.zeros(1, rows * cols, 3, 16, 16)
    for f in range(rows * cols):
        frames[0, f] = f / 10  # each frame a constant grey, its index
    sheet = frames_to_sheet(frames)
    assert sheet.shape == (1, 3, rows * 16, cols * 16)
    for f in range(rows * cols):
        r, c = divmod(f, cols)
        cell = sheet[0, :, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
        assert torch.allclose(cell, torch.full_like(cell, (f / 10 - 0.5) / 0.5))
    # Other frame counts and sizes are resampled onto the same grid.
    assert frames_to_sheet(torch.rand(2, 16, 3, 32, 32)).shape == (2, 3, rows * 16, cols * 16)


def test_shapes_clip_builds_saves_and_loads(tmp_path) -> None:
    import open_clip

    name = register_config(model_config(), name="shapes-clip-test")
    model = open_clip.create_model(name, pretrained=None)
    clip = ShapesClip(model, open_clip.get_tokenizer(name))
    b = shapes.make_batch(3, 0)
    sims = clip(b.videos, b.captions)
    assert sims.shape == (3,) and sims.requires_grad
    save_shapes_clip(model, tmp_path)
    assert video_clip_folder(f"local-dir:{tmp_path}") == tmp_path
    loaded = load_shapes_clip(tmp_path)
    with torch.no_grad():  # float16 storage: close, not equal
        assert torch.allclose(loaded(b.videos, b.captions), clip(b.videos, b.captions), atol=2e-2)


def test_shipped_shapes_clip_prefers_true_colour() -> None:
    assert _folder_mb(SHAPES_CLIP_DIR) <= 10
    clip = load_shapes_clip()
    b = shapes.make_batch(12, 11, "heldout")
    wrong = [
        c.replace(s.colour, "red" if s.colour != "red" else "blue") for c, s in zip(b.captions, b.specs, strict=True)
    ]
    with torch.no_grad():
        right_sims, wrong_sims = clip(b.videos, b.captions), clip(b.videos, wrong)
    assert (right_sims > wrong_sims).float().mean() >= 0.9


def test_clip_reward_with_the_shapes_clip_scores_whole_videos_and_sees_direction() -> None:
    from rewards import build_reward

    reward = build_reward("clip", model="shapes-clip", scale=2.0)
    b = shapes.make_batch(8, 3, "heldout")
    flipped = {"left": "right", "right": "left", "up": "down", "down": "up"}
    wrong = [
        c.replace(s.direction, flipped[s.direction]) if s.direction in flipped else c.replace("still", "moving left")
        for c, s in zip(b.captions, b.specs, strict=True)
    ]
    frames = b.videos.clone().requires_grad_(True)
    right = reward(frames, b.captions)
    assert right.shape == (8,)
    # The reward is the video CLIP's cosine (scaled), not a mean over frames.
    with torch.no_grad():
        assert torch.allclose(right, 2.0 * load_shapes_clip()(b.videos, b.captions), atol=1e-5)
        assert (right > reward(b.videos, wrong)).float().mean() >= 0.75
    # Differentiable in the frames, frozen in its own weights.
    right.sum().backward()
    assert frames.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in reward.video_clip.parameters())


def test_video_clip_folder_tells_video_from_image_clips(tmp_path) -> None:
    assert video_clip_folder("shapes-clip") == SHAPES_CLIP_DIR
    assert video_clip_folder("ViT-B-32") is None
    image_clip = tmp_path / "image"
    image_clip.mkdir()
    (image_clip / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    assert video_clip_folder(f"local-dir:{image_clip}") is None
    (image_clip / "open_clip_config.json").write_text(json.dumps({"rlr_video": {"video_grid": [4, 4]}}))
    with pytest.raises(ValueError, match=r"open_clip_config.json: video_grid \[4, 4\] is not supported"):
        video_clip_folder(str(image_clip))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_target_is_what_the_sampler_reads(tmp_path, prediction_type) -> None:
    """Fed the exact training target, the pipeline's DDIM step recovers the clean video."""
    scheduler = tm.build_components(tmp_path / "tokenizer", prediction_type=prediction_type)["scheduler"]
    scheduler.set_timesteps(10)
    x0 = tm.video_to_latents(shapes.make_batch(2, 0).videos)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = scheduler.timesteps[2]
    xt = scheduler.add_noise(x0, noise, t.expand(2))
    target = tm.training_target(scheduler, x0, noise, t.expand(2))
    assert torch.allclose(scheduler.step(target, t, xt).pred_original_sample, x0, atol=1e-4)


def test_caption_word_reward_reads_each_word_of_real_videos() -> None:
    """On rendered videos the shipped CLIP gives the true caption most of each word's
    probability, a caption with a wrong direction word much less, and gradients reach the frames."""
    from rlr_video.testbed.clip import CaptionWordReward

    reward = CaptionWordReward(load_shapes_clip())
    b = shapes.make_batch(8, 5, "heldout")
    wrong = [
        shapes.combo_prompt(s.colour, s.shape, "up" if s.direction == "down" else "down", s.background) for s in b.specs
    ]
    frames = b.videos.clone().requires_grad_(True)
    right = reward(frames, b.captions)
    values = right.detach()
    assert values.shape == (8,) and float(values.min()) >= 0 and float(values.max()) <= 1
    assert float(values.mean()) > 0.8
    with torch.no_grad():
        direction_only = CaptionWordReward(reward.clip, attributes=("direction",))
        assert float(direction_only(b.videos, wrong).mean()) < 0.2
        assert float(reward(b.videos, wrong).mean()) < float(right.mean()) - 0.2
    right.sum().backward()
    assert frames.grad.abs().sum() > 0


def test_clip_words_with_a_target_rewards_that_word_whatever_the_prompt() -> None:
    """``clip_words`` from the registry with ``target: {direction: down}`` scores the videos
    that move down high even under prompts that say "up" or say nothing, and the others low;
    a higher temperature flattens the probabilities."""
    from rewards import build_reward
    from rlr_video.testbed.word_swap import retarget

    assert retarget("a red circle on a black background", {"direction": "down"}) == (
        "a red circle moving down on a black background"
    )
    with pytest.raises(ValueError, match="direction 'sideways'"):
        build_reward({"clip_words": {"target": {"direction": "sideways"}}})
    reward = build_reward({"clip_words": {"target": {"direction": "down"}}})
    assert reward.differentiable and reward.attributes == ("direction",)
    batch = shapes.make_batch(80, 3, "all")
    down = [i for i, spec in enumerate(batch.specs) if spec.direction == "down"][:4]
    other = [i for i, spec in enumerate(batch.specs) if spec.direction in ("up", "left")][:4]
    videos = batch.videos[down + other]
    # prompts that say another direction, or none: the target word is what counts
    prompts = [
        shapes.combo_prompt(batch.specs[i].colour, batch.specs[i].shape, d)
        for i, d in zip(down + other, ["up", None] * 4, strict=True)
    ]
    scores = reward(videos, prompts)
    assert float(scores[:4].min()) > 0.5 and float(scores[4:].max()) < 0.2
    soft = build_reward({"clip_words": {"target": {"direction": "down"}, "temperature": 4}})(videos, prompts)
    assert float(soft[4:].mean()) > float(scores[4:].mean())
