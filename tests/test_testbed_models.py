"""The tiny-shapes diffusers pipeline and the shapes CLIP: build, save, load, shapes.

Random-weight models are built from the same configs the tools train, saved with
``save_pretrained`` and loaded through diffusers' / open_clip's own loaders. Tests of the
shipped weights run only when ``rlr_video/assets`` holds them.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from tolerances import EPS, assert_max_abs, assert_rel_close, layers, network_rtol, sum_atol

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


def _identity_atol(x: torch.Tensor) -> float:
    """How far the identity VAE's output is from x (see ``_identity_head``): its GroupNorm's std
    is sqrt(K^2/4 + mean(x^2)/2), which shifts the output by mean(x^2) / 2K per image and
    channel, and the values pass through float32 at the size of K (conv_in's bias, the norm,
    its affine map, conv_out's subtraction): four roundings of eps K / 2. Measured 6e-5 of 5e-4
    (data) and 6.6e-4 of 1.1e-3 (wide inputs: mostly the shift, which the bound includes)."""
    shift = float(x.pow(2).mean(dim=(-2, -1)).max()) / (2 * tm._K)
    return shift + 4 * EPS * tm._K / 2


def test_identity_vae_is_the_identity() -> None:
    vae = tm.build_identity_vae()
    x = shapes.make_batch(2, 0, "all").videos.flatten(0, 1) * 2 - 1
    assert vae.config.scaling_factor == 1.0 and vae.config.latent_channels == 3
    with torch.no_grad():
        assert_max_abs(vae.decode(x).sample, x, _identity_atol(x), "identity decoder")
        posterior = vae.encode(x).latent_dist
        assert_max_abs(posterior.mean, x, _identity_atol(x), "identity encoder mean")
        # log-variance -20 by construction: std e^-10, one float32 exp
        assert_max_abs(posterior.std, torch.full_like(x, math.exp(-10)), 2 * EPS * math.exp(-10), "encoder std")
        wide = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.5  # off the data range too
        assert_max_abs(vae.decode(wide).sample, wide, _identity_atol(wide), "identity decoder, wide inputs")


def test_latent_video_round_trip() -> None:
    video = shapes.make_batch(2, 0).videos
    latents = tm.video_to_latents(video)
    assert latents.shape == (2, 3, 8, 16, 16) and latents.min() >= -1
    # x * 2 and / 2 are exact; the - 1 and + 1 round at most once each at magnitude <= 1
    assert_max_abs(tm.latents_to_video(latents), video, sum_atol(3, 1.0), "video -> latents -> video")


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
    # each video sees its own caption; a batch of one may sum in another order: the UNet's
    # depth x sqrt(fan-in), relative
    assert_rel_close(out[1:], second_alone, network_rtol(*layers(pipe.unet)), "the second video denoised alone")
    with pytest.raises(ValueError, match="'transformer'"):
        tm.build_unet("transformer")


def test_training_encodes_prompts_like_the_pipeline(saved_pipeline) -> None:
    pipe = tm.load_pipeline(saved_pipeline)
    prompts = ["a red circle moving left on a black background", ""]
    ours = tm.encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts, cache={})
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
    assert torch.equal(ours, theirs)  # the same token ids through the same text encoder, as one batch


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
        # f / 10 rounded to float32, (x - 0.5) / 0.5 against float64: roundings at magnitude <= 1
        assert_max_abs(cell, torch.full_like(cell, (f / 10 - 0.5) / 0.5), sum_atol(3, 1.0), f"sheet cell {f}")
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
        # every weight rounded to float16 (2^-11 relative): through the tower's layers the
        # features move by about sqrt(depth) x 2^-11 (independent roundings), a cosine of two
        # features twice that (4e-3; measured 2e-4); a weight left random moves it by ~5e-2
        depth, _ = layers(model)
        atol = 2 * depth**0.5 * torch.finfo(torch.float16).eps / 2
        assert_max_abs(loaded(b.videos, b.captions), clip(b.videos, b.captions), atol, "float16-stored shapes CLIP")


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
        # with gradients the tower may take other kernels: its depth x sqrt(fan-in), relative
        expected = 2.0 * load_shapes_clip()(b.videos, b.captions)
        assert_rel_close(
            right, expected, network_rtol(*layers(reward.video_clip)), "clip reward against the video CLIP"
        )
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
    # x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) (v: sqrt(a) x_t - sqrt(1 - a) v): float32 roundings of
    # terms as large as |x_t| + |noise|, divided by sqrt(a) for epsilon
    a = float(scheduler.alphas_cumprod[t])
    size = float((xt.abs() + noise.abs()).max()) / (a**0.5 if prediction_type == "epsilon" else 1.0)
    recovered = scheduler.step(target, t, xt).pred_original_sample
    assert_max_abs(recovered, x0, sum_atol(4, size), f"x0 from the {prediction_type} target")


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
