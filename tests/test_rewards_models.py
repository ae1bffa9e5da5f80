"""Every model reward on tiny random-weight models built at run time: gradients, chunking,
frame subsampling, the published aesthetic head layout, formulas against hand computations,
and the errors users see when weights are missing."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from reward_fixtures import (
    AESTHETIC_LINEAR_SHAPES,
    AESTHETIC_MLP_SHAPES,
    TINY,
    TINY_768,
    aesthetic_head,
    dino_checkpoint,
    open_clip_weights,
    random_state_dict,
    register_tiny_open_clip,
    smooth_videos,
    tiny_dino,
    tiny_pickscore,
    workdir,
)
from tolerances import EPS, assert_max_abs, assert_rel_close, layers, network_rtol, sum_atol
from torch import nn

from rewards import MissingWeightsError, build_reward
from rewards.aesthetic import AestheticMLP, head_from_state_dict, load_head
from rewards.frame_mean import FrameMeanReward
from rewards.frames import sample_indices
from rewards.preprocess import ImagePreprocess
from rewards.temporal import pair_terms

PROMPTS = ["a red circle moving left", "a blue square moving up"]


@pytest.fixture(scope="module", autouse=True)
def tiny_models():
    register_tiny_open_clip()


def make(kind: str, **options):
    """Build reward ``kind`` on tiny models; ``options`` are the common ones (chunk_size, ...)."""
    if kind == "flicker":
        options.pop("checkpoint", None)
        return build_reward("flicker", **options)
    specs = {
        "clip": ("clip", {"model": TINY, "pretrained": open_clip_weights()}),
        "aesthetic": (
            "aesthetic",
            {"model": TINY_768, "pretrained": open_clip_weights(TINY_768), "head": aesthetic_head("mlp")},
        ),
        "aesthetic_linear": (
            "aesthetic",
            {"model": TINY_768, "pretrained": open_clip_weights(TINY_768), "head": aesthetic_head("linear")},
        ),
        "temporal_dino": ("temporal", {"model": tiny_dino()}),
        "temporal_clip": ("temporal", {"backbone": "clip", "model": TINY, "pretrained": open_clip_weights()}),
        "hpsv2": ("hpsv2", {"model": TINY, "pretrained": open_clip_weights(TINY, seed=1)}),
        "pickscore": ("pickscore", {"model": tiny_pickscore()}),
    }
    name, base = specs[kind]
    return build_reward(name, **base, **options)


def tower_rtol(reward) -> float:
    """Chunks, frame subsets and a reference computed apart run the reward's model on other
    numbers of images, which may sum in another order: its depth x sqrt(fan-in) (both towers
    and a head counted), for a relative L2 norm."""
    model = getattr(reward, "encoder", reward).model  # PickScore holds its model itself
    modules = [model, *([reward.head] if isinstance(getattr(reward, "head", None), nn.Module) else [])]
    return network_rtol(*layers(*modules))


def flicker_atol(frames: torch.Tensor) -> float:
    """Flicker is 1 - a mean of |differences| of pixels in [0, 1]: its sum in another order
    (sum_atol over one video's terms, each at most 1), and the subtraction from 1."""
    return sum_atol(frames[0].numel(), 1.0) + EPS


ALL = ["clip", "aesthetic", "aesthetic_linear", "temporal_dino", "temporal_clip", "flicker", "hpsv2", "pickscore"]
FRAME_MEAN = ["clip", "aesthetic", "aesthetic_linear", "hpsv2", "pickscore"]


@pytest.mark.parametrize("kind", ALL)
def test_gradients_reach_each_videos_own_frames(kind: str) -> None:
    reward = make(kind)
    assert reward.differentiable
    frames = smooth_videos(batch=2, frames=4, size=40).requires_grad_(True)
    scores = reward(frames, PROMPTS)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    (grad,) = torch.autograd.grad(scores[0], frames)
    assert torch.isfinite(grad).all()
    assert grad[0].abs().sum() > 0  # video 0's score depends on its frames ...
    assert grad[1].abs().sum() == 0  # ... and on no other video's


@pytest.mark.parametrize("kind", ALL)
def test_chunked_and_checkpointed_equals_unchunked(kind: str) -> None:
    frames = smooth_videos(batch=2, frames=4, size=36, seed=1)
    results = []
    for options in ({"chunk_size": None}, {"chunk_size": 3, "checkpoint": True}):
        x = frames.clone().requires_grad_(True)
        scores = make(kind, **options)(x, PROMPTS)
        (grad,) = torch.autograd.grad(scores.sum(), x)
        results.append((scores.detach(), grad))
    if kind == "flicker":  # chunks of pairs: the same per-pixel terms, means taken in pieces
        assert_max_abs(results[1][0], results[0][0], flicker_atol(frames), "flicker scores in chunks")
        # each pixel's gradient is +-1/n per difference it enters, added in another order: 2 terms
        atol = sum_atol(2, 2 / frames[0, 1:].numel())
        assert_max_abs(results[1][1], results[0][1], atol, "flicker gradients in chunks")
        return
    rtol = tower_rtol(make(kind))
    assert_rel_close(results[1][0], results[0][0], rtol, f"{kind} scores in chunks")
    assert_rel_close(results[1][1], results[0][1], rtol, f"{kind} gradients in chunks")


@pytest.mark.parametrize("kind", FRAME_MEAN)
def test_frame_subsampling_scores_the_drawn_frames(kind: str) -> None:
    frames = smooth_videos(batch=2, frames=5, size=32)
    full = make(kind)
    assert isinstance(full, FrameMeanReward)
    per_frame = full.frame_scores(frames, PROMPTS)  # (B, F)
    torch.manual_seed(7)
    sampled = make(kind, sample_frames=2)(frames, PROMPTS)
    torch.manual_seed(7)
    keep = sample_indices(5, 2)
    # the drawn frames alone are fewer images through the model (tower_rtol); the full reward
    # is frame_scores then its mean: the same ops, bitwise
    assert_rel_close(sampled, per_frame[:, keep].mean(dim=1), tower_rtol(full), f"{kind} on 2 drawn frames")
    assert torch.equal(full(frames, PROMPTS), per_frame.mean(dim=1))


def test_sample_indices_are_uniform() -> None:
    counts = torch.zeros(6)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3000):
        keep = sample_indices(6, 2, generator)
        assert len(set(keep.tolist())) == 2
        counts[keep] += 1
    # a fixed seed; each frequency has std sqrt(p (1 - p) / 3000) = 0.0086 for p = 1/3: 3.5 std
    # allowed, while a frame never drawn would be 0.33 off
    p = 2 / 6
    atol = 3.5 * (p * (1 - p) / 3000) ** 0.5
    torch.testing.assert_close(counts / 3000, torch.full((6,), p), atol=atol, rtol=0)
    assert sample_indices(6, 6) is None and sample_indices(6, None) is None


def pair_scores(kind: str, reward, frames: torch.Tensor) -> torch.Tensor:
    """(B, F - 1) terms whose mean is the reward: one per frame i > 0, computed by hand."""
    if kind == "flicker":
        return 1 - (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(2, 3, 4))
    f = reward.encoder.encode_images(frames.flatten(0, 1)).view(*frames.shape[:2], -1)
    return 0.5 * ((f[:, :-1] * f[:, 1:]).sum(-1) + (f[:, :1] * f[:, 1:]).sum(-1))


@pytest.mark.parametrize("kind", ["flicker", "temporal_clip"])
def test_pair_subsampling_scores_the_drawn_pairs(kind: str) -> None:
    """Uniform draws (above) of terms whose mean is the reward: an unbiased estimate."""
    frames = smooth_videos(batch=2, frames=5, size=32, seed=3) + 0.05 * torch.rand(2, 5, 3, 32, 32)
    with torch.no_grad():
        terms = pair_scores(kind, make(kind), frames)
        torch.manual_seed(11)
        sampled = make(kind, sample_frames=2)(frames, PROMPTS)
        torch.manual_seed(11)
        picked = pair_terms(5, 2)
        if kind == "flicker":  # per-pair means of |differences|, taken in other pieces
            atol = flicker_atol(frames)
            assert_max_abs(make(kind)(frames, PROMPTS), terms.mean(dim=1), atol, "flicker against its formula")
            assert_max_abs(sampled, terms[:, picked - 1].mean(dim=1), atol, "flicker on 2 drawn pairs")
        else:  # the drawn frames alone are fewer images through the model
            rtol = tower_rtol(make(kind))
            assert_rel_close(make(kind)(frames, PROMPTS), terms.mean(dim=1), rtol, f"{kind} against VBench's formula")
            assert_rel_close(sampled, terms[:, picked - 1].mean(dim=1), rtol, f"{kind} on 2 drawn pairs")


# ------------------------------------------------------------------ aesthetic heads


def test_aesthetic_mlp_matches_the_published_state_dict() -> None:
    assert {k: tuple(v.shape) for k, v in AestheticMLP().state_dict().items()} == AESTHETIC_MLP_SHAPES


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_aesthetic_head_loads_published_keys_unchanged(kind: str) -> None:
    path = aesthetic_head(kind)
    state = torch.load(path, weights_only=True)
    head = load_head(path)
    x = F.normalize(torch.randn(5, 768), dim=-1)
    expected = x
    prefixes = [f"layers.{i}." for i in (0, 2, 4, 6, 7)] if kind == "mlp" else [""]
    for prefix in prefixes:  # the MLP has no activations: a chain of affine maps
        expected = expected @ state[f"{prefix}weight"].T + state[f"{prefix}bias"]
    # nn.Linear's addmm against matmul + add: sums in another order, the head's depth x sqrt(fan-in)
    assert_rel_close(head(x), expected, network_rtol(*layers(head)), f"aesthetic {kind} head")
    assert not any(p.requires_grad for p in head.parameters()) and not head.training
    assert set(state) == set(AESTHETIC_MLP_SHAPES if kind == "mlp" else AESTHETIC_LINEAR_SHAPES)


def test_aesthetic_head_rejects_other_state_dicts() -> None:
    with pytest.raises(ValueError, match="not an aesthetic head.*found keys"):
        head_from_state_dict(random_state_dict({"fc.weight": (4, 768)}))


def test_aesthetic_reward_is_the_head_on_normalised_clip_embeddings() -> None:
    reward = make("aesthetic")
    frames = smooth_videos(batch=2, frames=3, size=48)
    model = open_clip.create_model(TINY_768, pretrained=open_clip_weights(TINY_768)).eval()
    pixels = ImagePreprocess.from_open_clip(model)(frames.flatten(0, 1))
    with torch.no_grad():
        embeddings = F.normalize(model.encode_image(pixels), dim=-1)
        expected = load_head(aesthetic_head("mlp"))(embeddings).view(2, 3).mean(dim=1)
        assert_rel_close(reward(frames, ["", ""]), expected, tower_rtol(reward), "aesthetic against the recipe")


def test_aesthetic_head_and_tower_widths_must_agree() -> None:
    with pytest.raises(ValueError, match="768-d embeddings but open_clip .* gives 32-d"):
        build_reward("aesthetic", model=TINY, pretrained=open_clip_weights(), head=aesthetic_head("mlp"))


# ------------------------------------------------------------------ formulas


def test_clip_training_variant_is_the_scaled_mean_cosine() -> None:
    """Without CLIPScore's prefix, clamp and 8-bit rounding (the training options), the score is
    ``scale`` times the mean cosine; CLIPScore itself is tested in test_rewards_references.py."""
    reward = make("clip", scale=2.5, prefix="", clamp=False, resize="smooth")
    frames = smooth_videos(batch=2, frames=3, size=48)
    # A local weights file for clip is taken for OpenAI's (CLIPScore's model): QuickGELU.
    model = open_clip.create_model(TINY, pretrained=open_clip_weights(), force_quick_gelu=True).eval()
    tokens = open_clip.get_tokenizer(TINY)(PROMPTS)
    with torch.no_grad():
        image = F.normalize(model.encode_image(ImagePreprocess.from_open_clip(model)(frames.flatten(0, 1))), dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        expected = 2.5 * (image.view(2, 3, -1) * text[:, None]).sum(-1).mean(dim=1)
        assert_rel_close(reward(frames, PROMPTS), expected, tower_rtol(reward), "clip against the recipe")
        assert set(PROMPTS) <= set(reward.encoder._text)  # text features are cached per prompt


def test_hpsv2_pads_the_longest_side_and_scores_the_cosine() -> None:
    reward = make("hpsv2")
    assert reward.encoder.preprocess.resize_mode == "longest"
    frames = smooth_videos(batch=2, frames=2, size=48)[..., :30]  # not square: padding matters
    with torch.no_grad():
        image = reward.encoder.encode_images(frames.flatten(0, 1)).view(2, 2, -1)
        text = reward.encoder.encode_text(PROMPTS, frames.device)
        # the reward's own features: only the cosine and the mean may sum in another order
        expected = (image * text[:, None]).sum(-1).mean(1)
        assert_max_abs(reward(frames, PROMPTS), expected, sum_atol(image.shape[-1] + 2, 1.0), "hpsv2 cosines")


def test_pickscore_matches_the_reference_pipeline() -> None:
    """PickScore's own recipe: processor on PIL images, projected features, logit_scale·cos."""
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    folder = tiny_pickscore()
    processor, model = AutoProcessor.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    frames = (smooth_videos(batch=2, frames=2, size=50)[..., :40] * 255).round() / 255  # 8-bit, not square
    images = [Image.fromarray((f.permute(1, 2, 0) * 255).round().byte().numpy()) for f in frames.flatten(0, 1)]
    with torch.no_grad():
        inputs = processor(images=images, return_tensors="pt")
        image = model.get_image_features(**inputs)
        image = F.normalize(getattr(image, "pooler_output", image), dim=-1).view(2, 2, -1)
        text_inputs = processor(text=PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        text = model.get_text_features(**text_inputs)
        text = F.normalize(getattr(text, "pooler_output", text), dim=-1)
        scale = model.logit_scale.exp()
        expected = scale * (image * text[:, None]).sum(-1).mean(dim=1)
        reward = make("pickscore")
        ours = reward(frames, PROMPTS)
        # PIL resamples in 8 bits, ours in float: the pixels within PIXEL_LEVELS 8-bit levels
        pixels = reward.preprocess(frames.flatten(0, 1))
        level = 1 / 255 / min(processor.image_processor.image_std)
        assert_max_abs(pixels, inputs["pixel_values"], PIXEL_LEVELS * level, "PickScore pixels against PIL's")
        # the rest of the recipe on our pixels: cosines of unit vectors (sum_atol over their
        # dimension) times the scale, averaged; measured equal. End to end, on PIL's pixels: a
        # level of random pixel noise moves these scores by up to 0.01 (measured), so 0.01 per
        # level allowed (measured 0.008); another prompt's score is 2-3 away.
        features = model.get_image_features(pixel_values=pixels)
        features = F.normalize(getattr(features, "pooler_output", features), dim=-1).view(2, 2, -1)
        on_our_pixels = scale * (features * text[:, None]).sum(-1).mean(dim=1)
        assert_max_abs(ours, on_our_pixels, sum_atol(text.shape[-1] + 3, float(scale)), "PickScore's formula")
        assert_max_abs(ours, expected, PIXEL_LEVELS * 0.01, "PickScore on PIL's pixels")


def test_temporal_is_vbench_consistency() -> None:
    reward = make("temporal_clip")
    frames = smooth_videos(batch=2, frames=4, size=32) + 0.1 * torch.rand(2, 4, 3, 32, 32)
    with torch.no_grad():
        f = reward.encoder.encode_images(frames.flatten(0, 1)).view(2, 4, -1)
        terms = [0.5 * ((f[:, i - 1] * f[:, i]).sum(-1) + (f[:, 0] * f[:, i]).sum(-1)) for i in range(1, 4)]
        # the reward's own features: cosines of unit vectors (sum_atol over their dimension), averaged
        atol = sum_atol(f.shape[-1] + 3, 1.0)
        assert_max_abs(reward(frames, PROMPTS), torch.stack(terms, 1).mean(1), atol, "VBench's formula")
        static = frames[:, :1].expand(-1, 4, -1, -1, -1)
        assert_max_abs(reward(static, PROMPTS), torch.ones(2), atol, "a still video's consistency")


def test_flicker_is_one_minus_mean_absolute_frame_difference() -> None:
    levels = torch.tensor([0.0, 0.5, 0.5, 1.0])
    frames = levels.view(1, 4, 1, 1, 1).expand(1, 4, 3, 8, 8)
    # the differences are halves and their sum is exact; a division and a subtraction round
    assert_max_abs(make("flicker")(frames, [""]), torch.tensor([1 - 1 / 3]), 2 * EPS, "flicker of 0, .5, .5, 1")
    alternating = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1, 1).expand(1, 3, 3, 8, 8)
    assert torch.equal(make("flicker")(alternating, [""]), torch.tensor([0.0]))  # 1 - mean of ones: exact


@pytest.mark.parametrize("kind", ["flicker", "temporal_dino"])
def test_one_frame_videos_score_one_with_a_zero_gradient(kind: str) -> None:
    frames = smooth_videos(batch=2, frames=1, size=32).requires_grad_(True)
    scores = make(kind)(frames, PROMPTS)
    assert torch.equal(scores.cpu(), torch.ones(2))  # one frame: 1 by definition, no arithmetic
    (grad,) = torch.autograd.grad(scores.sum(), frames)
    assert torch.equal(grad, torch.zeros_like(frames))


# ------------------------------------------------------------------ preprocessing


# PIL resamples an 8-bit image in two passes (width, then height), rounding to 8 bits after each:
# up to half a level each, one in all, where ours computes in float. Allowed: 2 levels at most
# and half a level on average (measured 0.98 and 0.27); a wrong filter, crop or normalisation
# is several levels off.
PIXEL_LEVELS, MEAN_PIXEL_LEVELS = 2.0, 0.5


def _assert_within_pixel_levels(ours, reference, std, what: str) -> None:
    level = 1 / 255 / min(std)  # one 8-bit level after normalisation
    assert_max_abs(ours, reference, PIXEL_LEVELS * level, f"{what} pixels")
    mean = float((ours - reference).abs().mean())
    assert mean <= MEAN_PIXEL_LEVELS * level, f"{what}: mean pixel difference {mean / level:.2f} levels"


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_preprocess_matches_open_clip_pil_transform(mode: str) -> None:
    from PIL import Image

    model = open_clip.create_model(TINY, pretrained=open_clip_weights())
    image = smooth_videos(batch=1, frames=1, size=90)[0, 0][:, :, :61]
    image = (image * 255).round() / 255
    pil = Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy())
    visual = model.visual
    reference = open_clip.image_transform(
        visual.image_size, is_train=False, mean=visual.image_mean, std=visual.image_std, resize_mode=mode
    )(pil)
    ours = ImagePreprocess.from_open_clip(model, mode)(image[None])[0]
    assert ours.shape == reference.shape
    _assert_within_pixel_levels(ours, reference, visual.image_std, f"open_clip {mode}")


@pytest.mark.parametrize("processor_name", ["clip", "vit", "bit"])
def test_preprocess_matches_hf_image_processors(processor_name: str) -> None:
    from PIL import Image
    from transformers import BitImageProcessor, CLIPImageProcessor, ViTImageProcessor

    processor = {
        "clip": CLIPImageProcessor(),
        "vit": ViTImageProcessor(),
        "bit": BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}),
    }[processor_name]
    image = (smooth_videos(batch=1, frames=1, size=300)[0, 0][:, :, :200] * 255).round() / 255
    pil = Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy())
    reference = processor(images=pil, return_tensors="pt")["pixel_values"][0]
    ours = ImagePreprocess.from_hf(processor)(image[None])[0]
    assert ours.shape == reference.shape
    _assert_within_pixel_levels(ours, reference, processor.image_std, processor_name)


# ------------------------------------------------------------------ loading, caching, errors


def test_models_load_once_and_are_frozen() -> None:
    first, second = make("clip"), make("clip", scale=2.0)
    assert first.encoder.model is second.encoder.model
    assert not first.encoder.model.training
    assert not any(p.requires_grad for p in first.encoder.model.parameters())
    assert make("temporal_dino").encoder.model is make("temporal_dino").encoder.model


def test_scoring_in_inference_mode_does_not_break_later_training() -> None:
    """Text features cached under inference_mode (the CLI, previews) must not poison autograd."""
    reward = make("clip")
    frames = smooth_videos(batch=2, frames=2, size=32)
    with torch.inference_mode():
        before = reward(frames, ["an inference-mode prompt", PROMPTS[0]])
    x = frames.clone().requires_grad_(True)
    after = reward(x, ["an inference-mode prompt", PROMPTS[0]])
    after.sum().backward()
    assert x.grad is not None
    # with gradients the model may take other kernels (attention's among them): tower_rtol
    assert_rel_close(after, before, tower_rtol(reward), "scores with gradients against inference mode")


def test_random_weights_warn() -> None:
    with pytest.warns(UserWarning, match="random weights"):
        build_reward("clip", model=TINY, pretrained=None, chunk_size=4)


def test_missing_weights_name_the_file_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network
    missing = str(workdir() / "nowhere" / "weights.pth")
    cases = [
        (lambda: build_reward("aesthetic", model=TINY_768, head=missing), [missing, "head="]),
        (lambda: build_reward("aesthetic", model=TINY_768), ["trl-lib/ddpo-aesthetic-predictor", "head="]),
        (lambda: build_reward("clip", model=TINY, pretrained=missing), ["weights.pth", "pretrained="]),
        (lambda: build_reward("hpsv2", model=TINY), ["HPS_v2.1_compressed.pt", "pretrained="]),
        (lambda: build_reward("hpsv2", model=TINY, pretrained=missing), [missing]),
        (lambda: build_reward("pickscore"), ["PickScore_v1", "model="]),
        (lambda: build_reward("pickscore", model=missing), ["PickScore", "model="]),
        (lambda: build_reward("temporal", model=missing), [missing, "save_pretrained", f"`hf download {missing}`"]),
    ]
    for build, fragments in cases:
        with pytest.raises(MissingWeightsError) as info:
            build()
        for fragment in fragments:
            assert fragment in str(info.value)
        # each missing file also as one short line (what, how to fetch it), for listings
        assert info.value.items and all("\n" not in what + fetch for what, fetch in info.value.items)
    # both of the aesthetic reward's weights are checked, so both are named at once (with an
    # empty cache: on a machine that holds them, the default weights would load)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(workdir() / "empty-hub-cache"))
    with pytest.raises(MissingWeightsError) as info:
        build_reward("aesthetic", model="ViT-L-14")
    assert info.value.items == [
        ("aesthetic head weights", "hf download trl-lib/ddpo-aesthetic-predictor aesthetic-model.pth"),
        (
            "open_clip ViT-L-14 'openai'",
            "hf download timm/vit_large_patch14_clip_224.openai open_clip_pytorch_model.bin",
        ),
    ]


def test_bad_inputs_are_named() -> None:
    reward = make("clip")
    with pytest.raises(ValueError, match="'clip'.*shape \\(B, F, 3, H, W\\)"):
        reward(torch.rand(2, 3, 32, 32), PROMPTS)
    with pytest.raises(ValueError, match="2 videos but 1 prompts"):
        reward(torch.rand(2, 2, 3, 32, 32), PROMPTS[:1])
    with pytest.raises(ValueError, match="unknown open_clip model"):
        build_reward("clip", model="no-such-model", pretrained=None)
    with pytest.raises(ValueError, match="backbone must be"):
        build_reward("temporal", backbone="resnet")
    with pytest.raises(ValueError, match="clip: resize must be one of \\['pil', 'smooth', 'uint8'\\]"):
        build_reward("clip", model=TINY, pretrained=open_clip_weights(), resize="bilinear")
    for pixel in ("brightness", "redness", "color_match"):  # channels last, or a single frame
        for frames in (torch.rand(2, 4, 32, 32, 3), torch.rand(2, 3, 32, 32)):
            with pytest.raises(ValueError, match=f"'{pixel}'.*shape \\(B, F, 3, H, W\\)"):
                build_reward(pixel)(frames, PROMPTS)
    with pytest.raises(ValueError, match="2 videos but 1 prompts"):
        build_reward("color_match")(torch.rand(2, 2, 3, 32, 32), PROMPTS[:1])


def test_pair_terms() -> None:
    assert pair_terms(4, None).tolist() == [1, 2, 3]
    torch.manual_seed(0)
    picked = pair_terms(6, 2)
    assert len(picked) == 2 and picked.min() >= 1 and picked.max() <= 5


def test_dino_training_checkpoints_load_their_teacher_backbone(tmp_path) -> None:
    """DINO's full checkpoints hold ``teacher``/``student`` with ``backbone.`` and ``head.`` keys:
    the teacher's backbone is the model the hub file holds."""
    backbone = torch.load(dino_checkpoint(), weights_only=True)
    full = {
        "teacher": {**{f"backbone.{k}": v for k, v in backbone.items()}, "head.last_layer.weight": torch.zeros(4, 8)},
        "student": {f"module.backbone.{k}": v * 0 for k, v in backbone.items()},
        "epoch": 100,
    }
    path = tmp_path / "checkpoint.pth"
    torch.save(full, path)
    frames = smooth_videos(batch=1, frames=3, size=40)
    with torch.no_grad():
        expected = build_reward("temporal", model=dino_checkpoint())(frames, [""])
        # the same DinoViT with the same weights (the teacher's backbone): the same ops, bitwise
        assert torch.equal(build_reward("temporal", model=str(path))(frames, [""]), expected)
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth.* is not a DINO ViT checkpoint"):
        build_reward("temporal", model=str(tmp_path / "other.pth"))
