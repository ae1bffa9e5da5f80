"""The memory planner's costs of the rewards whose input size follows the video: VideoAlign's
Qwen2-VL (per video, from ``input_sizes`` and ``model_dims``) against what autograd saves, and
VBench's DINO (tokens from its aspect-keeping resize); both also without their weights."""

from __future__ import annotations

import json

import pytest
import torch
from reward_fixtures import TINY, TINY_768, aesthetic_head, dino_checkpoint, open_clip_weights, register_tiny_open_clip
from videoalign_fixtures import tiny_videoreward

from rewards import build_reward, reward_sizes
from rewards.dino import dino_position_embeddings
from rewards.videoalign.sizes import QWEN2_VL_2B, VideoAlignSizes
from rlr_video.config import load_config
from rlr_video.memory.attention import AttentionBackend
from rlr_video.memory.cost_model import CostModel, vit_image_bytes
from rlr_video.memory.reward_cost import image_tokens, reward_leaf_cost, reward_stubs, vit_config, vlm_video_bytes
from rlr_video.memory.shape import VideoShape
from rlr_video.train.components import build_components

PROMPT = ["a red circle moving left"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def saved_activation_bytes(fn, model: torch.nn.Module) -> int:
    """Bytes of the tensors autograd keeps for the backward pass, each storage once, the model's
    own weights (which a frozen linear layer keeps) left out: they are resident anyway."""
    weights = {p.untyped_storage()._cdata for p in model.parameters()}
    seen = {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in weights:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


# (frames, fps, height, width): 4 sampled frames at 252x448, and 8 of an odd 75x133 video.
@pytest.mark.parametrize("case", [(13, 8.0, 90, 160), (21, 6.0, 75, 133)])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_videoalign_is_costed_as_autograd_saves(case, dtype):
    count, fps, height, width = case
    reward = build_reward("videoalign", model=tiny_videoreward(), dtype=dtype, video_fps=fps)
    frames = torch.rand(1, count, 3, height, width, requires_grad=True)
    measured = saved_activation_bytes(lambda: reward(frames, PROMPT), reward.model)
    sizes = reward.input_sizes(count, height, width, fps)
    prompt_tokens = reward.tokenize(PROMPT, sizes["vision_tokens"])["input_ids"].shape[1] - sizes["text_tokens"]
    predicted, largest = vlm_video_bytes(
        reward, VideoShape(1, count, height, width), AttentionBackend("cpu"), prompt_tokens
    )
    # The formula leaves out the small tensors (masks, position ids, the rotary frequencies, the
    # reward tokens' gather): 0.5-2% here, the vision tower and the language model's layers the rest.
    assert predicted == pytest.approx(measured, rel=0.05)
    assert 0 < largest < predicted
    saved, per_image, _, chunkable = reward_leaf_cost(
        reward, VideoShape(2, count, height, width), AttentionBackend("cpu")
    )
    assert not chunkable  # the whole video at once: frame chunks do not apply
    default, _ = vlm_video_bytes(reward, VideoShape(1, count, height, width), AttentionBackend("cpu"))
    # per image: the same float64 product and division of the same byte count, bitwise
    assert saved == int(2 * default) and per_image == 2 * default / (2 * count)


def test_videoalign_without_weights_is_qwen2_vl_2b():
    """The stand-in ``rlr-video plan`` costs: Qwen2-VL-2B's tower (transformers' own defaults for
    it), its language model, and the frames VideoAlign reads, as the loaded reward plans them."""
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

    vision = Qwen2VLVisionConfig()
    stand_in = reward_sizes("videoalign", {"video_fps": 8.0})
    assert isinstance(stand_in, VideoAlignSizes)
    dims = stand_in.model_dims()
    expected = (vision.depth, vision.embed_dim, vision.num_heads, vision.embed_dim * vision.mlp_ratio)
    assert (dims["vision_layers"], dims["vision_width"], dims["vision_heads"], dims["vision_mlp"]) == expected
    assert (dims["text_layers"], dims["text_width"], dims["text_heads"], dims["text_kv_heads"]) == (28, 1536, 12, 2)
    assert dims["text_mlp"] == 8960 and dims == {**QWEN2_VL_2B, "itemsize": 2}  # VideoAlign's default bf16
    assert 2.1e9 < stand_in.weight_bytes() / 2 < 2.3e9  # Qwen2-VL-2B: 2.2 billion parameters
    # The tiny fixture has Qwen2-VL-2B-Instruct's processor numbers and VideoReward's 200704 pixels.
    loaded = build_reward("videoalign", model=tiny_videoreward(), dtype="fp32", video_fps=8.0)
    for shape in [(13, 90, 160), (49, 480, 720), (16, 320, 576)]:
        ours, theirs = stand_in.input_sizes(*shape), loaded.input_sizes(*shape)
        assert {k: v for k, v in ours.items() if k != "text_tokens"} == {
            k: v for k, v in theirs.items() if k != "text_tokens"
        }
        assert ours["text_tokens"] > ours["vision_tokens"]  # plus the template's estimated tokens
    from_folder = VideoAlignSizes(model=tiny_videoreward(), video_fps=8.0)  # its model_config.json
    assert from_folder.fps == 2.0 and from_folder.max_pixels == 200704


def test_plan_without_weights_costs_videoalign_and_its_weights():
    config = load_config("toy", ["reward={videoalign: {video_fps: 8}}"])
    parts = build_components(config, "cuda", meta=True, budget="80GB")  # the reward is not loaded
    [(_, stand_in)] = parts.reward.terms
    assert isinstance(stand_in, VideoAlignSizes)
    model = CostModel(parts.backbone, parts.reward, device="cuda")
    shape = VideoShape(2, 16, 320, 576)
    per_video, _ = vlm_video_bytes(stand_in, shape.replace(batch=1), model.attention)
    assert model.reward_cost(shape).saved == int(2 * per_video) > 2**30  # GiBs of activations a video
    assert model.fixed().details["reward:videoalign"] == stand_in.weight_bytes()


def test_dino_tokens_follow_the_frames_shape():
    """VBench's DINO keeps the aspect ratio: 576x320 frames are 224x403, 14 x 25 patches and the
    CLS token, 351 tokens (224x224's 197 would undercount them by 44%)."""
    reward = build_reward("temporal", model=dino_checkpoint())
    shape = VideoShape(2, 16, 320, 576)
    vision = vit_config(reward.encoder.model)
    assert vision["patch"] == 16 and vision["tokens"] == 197  # the checkpoint's 14 x 14 grid
    assert image_tokens(reward, shape, vision) == 351
    pixels = reward.encoder.preprocess(torch.rand(1, 3, 320, 576))
    positions = dino_position_embeddings(reward.encoder.model.vit.pos_embed, *pixels.shape[-2:], 16)
    assert positions.shape[1] == 351  # what the model sees
    saved, per_image, _, chunkable = reward_leaf_cost(reward, shape, AttentionBackend("cuda"))
    heads = reward.encoder.model.vit.blocks[0].attn.num_heads
    assert per_image == vit_image_bytes(vision["width"], 1, heads, 351, 4, materialized=False)
    assert saved == int(per_image * 32) and chunkable

    stand_in = reward_sizes("temporal", {"chunk_size": 8})  # without weights: DINO ViT-B/16
    assert stand_in.chunk_size == 8 and image_tokens(stand_in, shape, stand_in.vision) == 351
    assert reward_sizes("temporal", {"backbone": "clip"}) is None  # its open_clip tower's config
    assert 85e6 < stand_in.weight_bytes() / 4 < 87e6  # ViT-B/16: 86 million parameters


def test_plan_without_weights_costs_dino_at_the_frames_shape():
    config = load_config("toy", ["reward={temporal: 1.0, clip: 0.5}"])
    parts = build_components(config, "cuda", meta=True, budget="80GB")
    [(_, dino), (_, clip)] = parts.reward.terms
    model = CostModel(parts.backbone, parts.reward, device="cuda")
    shape = VideoShape(1, 49, 480, 720)  # CogVideoX's frames
    tokens = (224 // 16) * (int(224 * 720 / 480) // 16) + 1  # 224x336: 14 x 21 patches and CLS
    assert image_tokens(dino, shape, dino.vision) == tokens == 295
    assert clip.vision["tokens"] == 50  # ViT-B/32 at its 224 crop, whatever the frames
    dino_bytes = vit_image_bytes(768, 12, 12, tokens, dino.vision["itemsize"], materialized=False)
    clip_bytes = vit_image_bytes(768, 12, 12, 50, clip.vision["itemsize"], materialized=False)
    assert model.reward_cost(shape).saved == int(dino_bytes * 49) + int(clip_bytes * 49)


@pytest.mark.parametrize(
    "name, options",
    [
        ("aesthetic", {"model": TINY_768, "head": "mlp"}),  # both towers and the MLP head
        ("clip", {"model": TINY}),
        ("clip", {"model": TINY, "dtype": "bf16"}),  # the reward's load dtype, not the training's
    ],
)
def test_plan_without_weights_counts_the_weights_the_reward_loads(name, options):
    """A plan made from the config alone counts the reward's weights as the loaded reward holds
    them: open_clip builds both CLIP towers, so both are in memory (ViT-L-14's text tower is
    0.46 of aesthetic's 1.60 GiB)."""
    register_tiny_open_clip()
    stub_options = {k: v for k, v in options.items() if k != "head"}
    [stub] = reward_stubs({name: stub_options})
    loaded_options = dict(stub_options, pretrained=open_clip_weights(options["model"]))
    if "head" in options:
        loaded_options["head"] = aesthetic_head(options["head"])
    loaded = build_reward(name, **loaded_options)
    models = [loaded.encoder.model, *([loaded.head] if name == "aesthetic" else [])]
    held = sum(p.numel() * p.element_size() for m in models for p in m.parameters())
    assert stub.weight_bytes() == held > 0
    config = load_config("toy", [f"reward={json.dumps({name: stub_options})}"])  # what rlr-video plan costs
    parts = build_components(config, "cuda", meta=True, budget="80GB")
    assert CostModel(parts.backbone, parts.reward, device="cuda").fixed().details[f"reward:{name}"] == held


def test_the_default_towers_weigh_what_the_published_models_do():
    stubs = {s.name: s for s in reward_stubs({"aesthetic": 1.0, "clip": 0.5, "hpsv2": 1.0})}
    assert 427.6e6 < (stubs["aesthetic"].weight_bytes() / 4 - 0.93e6) < 427.7e6  # ViT-L/14 and the MLP
    assert 151.2e6 < stubs["clip"].weight_bytes() / 4 < 151.3e6  # ViT-B/32
    assert 986.1e6 < stubs["hpsv2"].weight_bytes() / 4 < 986.2e6  # ViT-H/14
