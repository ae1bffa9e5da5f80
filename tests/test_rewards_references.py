"""Each zoo reward against an independent re-implementation of its named reference, written here
from the reference's code, on tiny random weights saved in the real checkpoints' formats, at the
sizes where references part ways: odd crop margins (576×320 and 848×480 frames: 403 and 395
pixels wide at short side 224), odd sizes, portrait frames, hard edges.

References (read with the project's search tools):
- PickScore: yuvalkirstain/PickScore README ``calc_probs`` + the Hugging Face ``CLIPProcessor``;
- CLIPScore: jmhessel/clipscore ``clipscore.py``;
- aesthetic: christophschuhmann/improved-aesthetic-predictor ``simple_inference.py``;
- HPSv2: tgxs002/HPSv2 ``hpsv2/img_score.py`` + ``hpsv2/src/open_clip/transform.py``;
- VBench: Vchitect/VBench ``vbench/subject_consistency.py``, ``background_consistency.py``,
  ``temporal_flickering.py``, ``utils.py``; DINO: facebookresearch/dino ``vision_transformer.py``.

Tolerances. Where the reference is float arithmetic on the same pixels, scores agree to float32
rounding (``rounding_atol``): each feature vector within its model's depth × √fan-in relative
rounding (tests/tolerances.py ``network_rtol``, 2e-5 to 1e-4 here), which moves a cosine of unit
vectors by at most the two vectors' relative errors, plus the normalisation, the dot product and
the frame mean in another order. Where the reference is Pillow on 8-bit images, a few pixels land
one level apart (Pillow's fixed-point weights); those pixels bound the score difference to first
order, Σ|∂score/∂pixel|·|Δpixel|, which the tests compute from the reference's own gradient.
"""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from reward_fixtures import (
    TINY_224,
    TINY_224_768,
    aesthetic_head,
    dino_checkpoint,
    dino_hf_folder,
    hard_edged_videos,
    open_clip_weights,
    register_tiny_open_clip,
    tiny_pickscore,
)
from test_rewards_models import tower_rtol
from tolerances import EPS, assert_max_abs, blocked_sum_atol, sum_atol

from rewards import build_reward
from rewards.stats import reference_mean

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PROMPTS = ["a red circle moving left", "a blue square moving up"]
# (height, width): Zeroscope's 576×320 and 848×480 (odd crop margins at 224), odd sizes, portrait.
SIZES = [(320, 576), (480, 848), (61, 90), (300, 200)]
# Normalised pixels computed apart, (x - mean) / std with |x| <= 1: a few roundings at 1 / std.
# Anything further apart is a pixel Pillow rounded to another 8-bit level (0.015 after normalising).
SAME_PIXEL = sum_atol(4, 1 / min(OPENAI_STD))


def rounding_atol(reward, dim: int, scale: float = 1.0) -> float:
    """How far float32 rounding moves ``scale`` × a mean of cosines of ``dim``-wide features
    computed apart (see the module docstring): the towers' ``tower_rtol`` (both towers' depth
    counted, which bounds the sum of the two vectors' relative errors), plus the normalisation,
    the dot product and the mean in another order (``sum_atol`` of ``dim`` + 3 terms <= 1)."""
    return scale * (tower_rtol(reward) + sum_atol(dim + 3, 1.0))


def _logit_scale(reward) -> float:
    return float(reward.model.logit_scale.exp())


@pytest.fixture(scope="module", autouse=True)
def tiny_models():
    register_tiny_open_clip()


def pil_frames(frames: torch.Tensor) -> list[Image.Image]:
    """(B, F, 3, H, W) 8-bit floats → B·F Pillow images, as the references open image files."""
    array = (frames.flatten(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in array]


def uint8_video(video: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) 8-bit floats → (F, H, W, 3) uint8, as decord and cv2 return frames."""
    return (video * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def first_order_bound(score: torch.Tensor, pixels: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Σ|∂score/∂pixels|·|delta| per video: how far ``delta`` moves each score to first order."""
    (grad,) = torch.autograd.grad(score.sum(), pixels)  # pixels: each video's frames in turn
    return (grad * delta).abs().reshape(len(score), -1).sum(1)


# ------------------------------------------------------------------ PickScore


def pickscore_reference(folder: str, frames: torch.Tensor, prompts: list[str], backend: str):
    """PickScore's ``calc_probs`` scoring: processor(images), get_image_features, normalise,
    logit_scale.exp() · text @ image; per video the mean over its frames.
    Returns (scores, pixel_values with grad, a function pixels → scores)."""
    from transformers import AutoModel, AutoProcessor, CLIPImageProcessorPil

    processor = AutoProcessor.from_pretrained(folder)
    image_processor = CLIPImageProcessorPil.from_pretrained(folder) if backend == "pil" else processor.image_processor
    model = AutoModel.from_pretrained(folder).eval()
    pixels = image_processor(images=pil_frames(frames), return_tensors="pt")["pixel_values"].requires_grad_(True)
    text_inputs = processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")

    def score(pixel_values: torch.Tensor) -> torch.Tensor:
        image = model.get_image_features(pixel_values=pixel_values)
        image = getattr(image, "pooler_output", image)
        image = image / torch.norm(image, dim=-1, keepdim=True)
        with torch.no_grad():
            text = model.get_text_features(**text_inputs)
            text = getattr(text, "pooler_output", text)
            text = text / torch.norm(text, dim=-1, keepdim=True)
        per_frame = model.logit_scale.exp() * (image.view(*frames.shape[:2], -1) * text[:, None]).sum(-1)
        return per_frame.mean(dim=1)

    return score(pixels), pixels, score


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("backend", ["pil", "torchvision"])
def test_pickscore_is_the_clip_processors_score(size: tuple[int, int], backend: str) -> None:
    """Both processor backends of transformers 5 (Pillow, and torchvision's uint8 kernel, the
    default) resize 8-bit images in two rounded passes and crop at (H − 224) // 2."""
    folder = tiny_pickscore(size="224")
    frames = hard_edged_videos(2, 2, *size, seed=1)
    reward = build_reward("pickscore", model=folder)
    expected, pixels, _ = pickscore_reference(folder, frames, PROMPTS, backend)
    ours_pixels = reward.preprocess(frames.flatten(0, 1))
    delta = (ours_pixels - pixels.detach()).abs()
    level = 1 / 255 / min(OPENAI_STD)  # one 8-bit level after normalisation
    # Pillow's fixed-point weights (and torchvision's uint8 kernel, which mimics them) put a few
    # pixels one level (rarely two) away from the float kernels; no more than that.
    assert delta.max() <= 2 * level + SAME_PIXEL
    assert (delta > SAME_PIXEL).float().mean() < (0.005 if backend == "pil" else 0.02)
    bound = first_order_bound(expected, pixels, delta)
    with torch.no_grad():
        ours = reward(frames, PROMPTS)
    # measured <= 3.7e-4 against 9e-3 to 2e-2 allowed (torchvision), 1.3e-4 against 1.5e-3 (PIL)
    tolerance = 1.5 * bound + rounding_atol(reward, reward.model.config.projection_dim, _logit_scale(reward))
    assert ((ours - expected.detach()).abs() <= tolerance).all(), (ours, expected, tolerance)


def test_pickscore_crop_is_floored_where_torchvision_rounds() -> None:
    """The crop alone, on pixels that name their column: the processor's offset is (W − 224) // 2."""
    from transformers import AutoProcessor

    folder = tiny_pickscore(size="224")
    processor = AutoProcessor.from_pretrained(folder).image_processor
    reward = build_reward("pickscore", model=folder)
    for width in (403, 395, 401):  # margins 179, 171 (odd) and 177
        column = torch.arange(width, dtype=torch.float32).expand(224, width) / 1000
        image = column.expand(3, 224, width)[None]
        theirs = processor(images=image, do_resize=False, do_rescale=False, do_normalize=False, return_tensors="pt")
        ours = reward.preprocess._crop_or_pad(image)
        torch.testing.assert_close(ours, theirs["pixel_values"], rtol=0, atol=0)
        assert int(round(ours[0, 0, 0, 0].item() * 1000)) == (width - 224) // 2


def test_pickscore_exactness_is_visible_at_odd_margins() -> None:
    """The test above can fail: the old centre crop (torchvision's rounding) moves 576×320 frames'
    scores by more than the tolerance."""
    folder = tiny_pickscore(size="224")
    frames = hard_edged_videos(2, 2, 320, 576, seed=1)
    reward = build_reward("pickscore", model=folder)
    expected, pixels, score = pickscore_reference(folder, frames, PROMPTS, "torchvision")
    from dataclasses import replace

    reward.preprocess = replace(reward.preprocess, crop_offset="round")
    with torch.no_grad():
        shifted = reward(frames, PROMPTS)
    # 0.025 and 0.04 here: 17-27 times the rounding allowed
    rounding = rounding_atol(reward, reward.model.config.projection_dim, _logit_scale(reward))
    assert ((shifted - expected.detach()).abs() > 10 * rounding).all()


# ------------------------------------------------------------------ CLIPScore and the aesthetic predictor


def openai_clip_pixels(frames: torch.Tensor) -> torch.Tensor:
    """OpenAI ``clip``'s preprocess, as CLIPScore's ``_transform_test`` and the aesthetic
    predictor's ``clip.load`` build it: Pillow bicubic resize, CenterCrop, ToTensor, Normalize."""
    transform = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            lambda image: image.convert("RGB"),
            T.ToTensor(),
            T.Normalize(OPENAI_MEAN, OPENAI_STD),
        ]
    )
    return torch.stack([transform(image) for image in pil_frames(frames)])


def openai_model(name: str, weights: str) -> torch.nn.Module:
    """The OpenAI architecture (QuickGELU) with the given open_clip state dict."""
    return open_clip.create_model(name, pretrained=weights, force_quick_gelu=True).eval()


def clipscore_reference(frames: torch.Tensor, prompts: list[str], weights: str):
    """``get_clip_score``: caption prefix, numpy normalisation, w · clip(cos, 0, None) with w = 2.5;
    per video the mean of its frames' scores. Returns (scores, pixels with grad, cosines)."""
    model = openai_model(TINY_224, weights)
    pixels = openai_clip_pixels(frames).requires_grad_(True)
    captions = ["A photo depicts " + p for p in prompts]
    with torch.no_grad():
        text = model.encode_text(open_clip.get_tokenizer(TINY_224)(captions)).numpy()
    text = text / np.sqrt(np.sum(text**2, axis=1, keepdims=True))
    image = model.encode_image(pixels)
    image = image / image.pow(2).sum(1, keepdim=True).sqrt()
    cosine = (image.view(*frames.shape[:2], -1) * torch.from_numpy(text)[:, None]).sum(-1)
    return (2.5 * cosine.clamp(min=0)).mean(dim=1), pixels, cosine.detach()


@pytest.mark.parametrize("size", SIZES)
def test_clip_is_clipscore(size: tuple[int, int]) -> None:
    weights = open_clip_weights(TINY_224, seed=6)  # a seed whose cosines have both signs
    frames = hard_edged_videos(2, 3, *size, seed=2)
    reward = build_reward("clip", model=TINY_224, pretrained=weights)
    expected, pixels, cosine = clipscore_reference(frames, PROMPTS, weights)
    assert (cosine < 0).any() and (cosine > 0).any(), "the data must exercise the clamp"
    delta = (reward.encoder.preprocess(frames.flatten(0, 1)) - pixels.detach()).abs()
    assert (delta > SAME_PIXEL).float().mean() < 0.005  # Pillow's fixed-point weights, see the docstring
    # w = 2.5 times the clamped cosine (the clamp moves nothing by more); measured <= 3.7e-6 of 1.3e-4
    rounding = rounding_atol(reward, reward.encoder.model.visual.output_dim, 2.5)
    tolerance = 1.5 * first_order_bound(expected, pixels, delta) + rounding
    with torch.no_grad():
        ours = reward(frames, PROMPTS)
    assert ((ours - expected.detach()).abs() <= tolerance).all(), (ours, expected, tolerance)
    # Without the prefix (the pre-#31 default) the score is another number.
    plain = build_reward("clip", model=TINY_224, pretrained=weights, prefix="")
    with torch.no_grad():
        assert ((plain(frames, PROMPTS) - expected.detach()).abs() > 10 * tolerance).any()


def aesthetic_reference(frames: torch.Tensor, weights: str, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``simple_inference.py``: clip preprocess, encode_image, ``normalized`` (numpy L2, zero
    norms left alone), the MLP (affine layers, dropout off); per video the mean of its frames."""
    model = openai_model(TINY_224_768, weights)
    pixels = openai_clip_pixels(frames).requires_grad_(True)
    features = model.encode_image(pixels)
    norm = features.norm(dim=-1, keepdim=True)
    embedding = features / torch.where(norm == 0, torch.ones_like(norm), norm)
    state = torch.load(head, weights_only=True)
    out = embedding
    for layer in (0, 2, 4, 6, 7):
        out = out @ state[f"layers.{layer}.weight"].T + state[f"layers.{layer}.bias"]
    return out.view(*frames.shape[:2]).mean(dim=1), pixels


@pytest.mark.parametrize("size", SIZES)
def test_aesthetic_is_the_improved_predictor(size: tuple[int, int]) -> None:
    weights, head = open_clip_weights(TINY_224_768, seed=4), aesthetic_head("mlp", seed=1, unit=True)
    frames = hard_edged_videos(2, 2, *size, seed=3)
    reward = build_reward("aesthetic", model=TINY_224_768, pretrained=weights, head=head)
    expected, pixels = aesthetic_reference(frames, weights, head)
    delta = (reward.encoder.preprocess(frames.flatten(0, 1)) - pixels.detach()).abs()
    # The head's unit-scaled affine layers keep its terms O(1) for a unit embedding: its rounding
    # is the tower and head's depth x sqrt(fan-in) (tower_rtol) at a scale of at least 1;
    # measured <= 4e-7 against 8e-5 allowed.
    rounding = tower_rtol(reward) * expected.detach().abs().clamp(min=1)
    tolerance = 1.5 * first_order_bound(expected, pixels, delta) + rounding
    with torch.no_grad():
        ours = reward(frames, [""] * 2)
    assert ((ours - expected.detach()).abs() <= tolerance).all(), (ours, expected, tolerance)


def test_openai_weights_files_get_quick_gelu(tmp_path) -> None:
    """A local OpenAI ViT-L/14 file for the aesthetic head (or ViT-B/32 for CLIPScore and VBench)
    loads with QuickGELU; an open_clip config next to the file, or ``quick_gelu=``, says otherwise."""
    import shutil

    def activation(reward) -> str:
        return type(reward.encoder.model.visual.transformer.resblocks[0].mlp.gelu).__name__

    weights, head = open_clip_weights(TINY_224_768, seed=4), aesthetic_head("mlp", seed=1, unit=True)
    assert activation(build_reward("aesthetic", model=TINY_224_768, pretrained=weights, head=head)) == "QuickGELU"
    assert activation(build_reward("clip", model=TINY_224, pretrained=open_clip_weights(TINY_224))) == "QuickGELU"
    temporal = build_reward("temporal", backbone="clip", model=TINY_224, pretrained=open_clip_weights(TINY_224))
    assert activation(temporal) == "QuickGELU"
    assert activation(build_reward("hpsv2", model=TINY_224, pretrained=open_clip_weights(TINY_224))) == "GELU"
    laion = tmp_path / "open_clip_pytorch_model.bin"
    shutil.copy(weights, laion)
    (tmp_path / "open_clip_config.json").write_text('{"model_cfg": {"quick_gelu": false}}')
    assert activation(build_reward("aesthetic", model=TINY_224_768, pretrained=str(laion), head=head)) == "GELU"
    gelu = build_reward("aesthetic", model=TINY_224_768, pretrained=weights, head=head, quick_gelu=False)
    assert activation(gelu) == "GELU"


def test_torchscript_archives_are_refused_with_the_conversion(tmp_path) -> None:
    """OpenAI's original ``.pt`` files are TorchScript; they are not unpickled, the error says how
    to convert them to a state dict."""
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "ViT-B-32.pt"
    scripted.save(str(path))
    with pytest.raises(ValueError, match="TorchScript archive.*torch.jit.load.*state_dict"):
        build_reward("clip", model=TINY_224, pretrained=str(path))


# ------------------------------------------------------------------ HPSv2


def hpsv2_pixels(frames: torch.Tensor) -> torch.Tensor:
    """HPSv2's eval transform: ToTensor, then ``ResizeMaxSize(224, fill=0)`` on the float tensor
    (torchvision resize, no clamp), then Normalize."""

    def resize_max_size(image: torch.Tensor, max_size: int = 224) -> torch.Tensor:
        height, width = image.shape[1:]
        scale = max_size / float(max(height, width))
        if scale != 1.0:
            new_size = tuple(round(dim * scale) for dim in (height, width))
            image = TF.resize(image, new_size, T.InterpolationMode.BICUBIC)
            pad_h, pad_w = max_size - new_size[0], max_size - new_size[1]
            image = TF.pad(image, padding=[pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
        return image

    transform = T.Compose([T.ToTensor(), resize_max_size, T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    return torch.stack([transform(image) for image in pil_frames(frames)])


@pytest.mark.parametrize("size", SIZES)
def test_hpsv2_is_img_score(size: tuple[int, int]) -> None:
    weights = open_clip_weights(TINY_224, seed=5, wrap=True)  # HPS checkpoints are {"state_dict": ...}
    frames = hard_edged_videos(2, 2, *size, seed=4)
    model = open_clip.create_model(TINY_224, pretrained=weights).eval()  # GELU, as HPSv2 builds ViT-H-14
    with torch.no_grad():
        image = F.normalize(model.encode_image(hpsv2_pixels(frames)), dim=-1)
        text = F.normalize(model.encode_text(open_clip.get_tokenizer(TINY_224)(PROMPTS)), dim=-1)
        expected = (image.view(2, 2, -1) * text[:, None]).sum(-1).mean(dim=1)
        reward = build_reward("hpsv2", model=TINY_224, pretrained=weights)
        ours = reward(frames, PROMPTS)
    # measured <= 9e-8 of 5e-5
    assert_max_abs(ours, expected, rounding_atol(reward, reward.encoder.model.visual.output_dim), "HPSv2 scores")


# ------------------------------------------------------------------ VBench consistency and flickering


def dino_reference(state: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """facebookresearch/dino ``VisionTransformer.forward`` (``prepare_tokens`` with
    ``interpolate_pos_encoding``, blocks, norm, CLS) for one (1, 3, H, W) image."""
    width = state["cls_token"].shape[-1]
    heads, patch = width // 64, state["patch_embed.proj.weight"].shape[-1]
    _, _, w, h = image.shape  # DINO names the height w
    x = F.conv2d(image, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch)
    x = torch.cat([state["cls_token"], x.flatten(2).transpose(1, 2)], dim=1)
    npatch, n = x.shape[1] - 1, state["pos_embed"].shape[1] - 1
    if npatch == n and w == h:
        pos = state["pos_embed"]
    else:
        w0, h0 = w // patch + 0.1, h // patch + 0.1
        grid = state["pos_embed"][:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), width).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic")
        assert int(w0) == grid.shape[-2] and int(h0) == grid.shape[-1]
        pos = torch.cat([state["pos_embed"][:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, width)], dim=1)
    x = x + pos
    count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(count):
        b = f"blocks.{i}."
        y = F.layer_norm(x, (width,), state[b + "norm1.weight"], state[b + "norm1.bias"], eps=1e-6)
        qkv = (y @ state[b + "attn.qkv.weight"].T + state[b + "attn.qkv.bias"]).reshape(1, -1, 3, heads, width // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (width // heads) ** -0.5).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(1, -1, width)
        x = x + y @ state[b + "attn.proj.weight"].T + state[b + "attn.proj.bias"]
        y = F.layer_norm(x, (width,), state[b + "norm2.weight"], state[b + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ state[b + "mlp.fc1.weight"].T + state[b + "mlp.fc1.bias"])
        x = x + y @ state[b + "mlp.fc2.weight"].T + state[b + "mlp.fc2.bias"]
    x = F.layer_norm(x, (width,), state["norm.weight"], state["norm.bias"], eps=1e-6)
    return x[:, 0]


def consistency_reference(features: list[torch.Tensor]) -> tuple[float, int]:
    """The loop of ``subject_consistency`` / ``background_consistency``: (video_sim, cnt)."""
    video_sim, count = 0.0, 0
    first = features[0]
    for former, feature in zip(features[:-1], features[1:]):
        sim_pre = max(0.0, F.cosine_similarity(former, feature).item())
        sim_fir = max(0.0, F.cosine_similarity(first, feature).item())
        video_sim += (sim_pre + sim_fir) / 2
        count += 1
    return video_sim, count


def subject_consistency_reference(videos: list[torch.Tensor], checkpoint: str) -> tuple[list[float], float]:
    """VBench ``subject_consistency``: ``load_video`` gives ``torch.Tensor(frames)`` (float 0–255),
    ``dino_transform(224)``, one frame at a time. Returns (per-video scores, sim / cnt)."""
    state = torch.load(checkpoint, weights_only=True)
    transform = T.Compose(
        [
            T.Resize(size=224, antialias=False),
            T.Lambda(lambda x: x.float().div(255.0)),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    scores, sim, cnt = [], 0.0, 0
    for video in videos:
        images = transform(torch.Tensor(uint8_video(video)).permute(0, 3, 1, 2))
        features = [F.normalize(dino_reference(state, image[None]), dim=-1, p=2) for image in images]
        video_sim, count = consistency_reference(features)
        scores.append(video_sim / (len(images) - 1))
        sim, cnt = sim + video_sim, cnt + count
    return scores, sim / cnt


def background_consistency_reference(videos: list[torch.Tensor], weights: str) -> tuple[list[float], float]:
    """VBench ``background_consistency``: ``clip_transform(224)`` on the float frames, OpenAI CLIP."""
    model = openai_model(TINY_224, weights)
    transform = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=False),
            T.CenterCrop(224),
            T.Lambda(lambda x: x.float().div(255.0)),
            T.Normalize(OPENAI_MEAN, OPENAI_STD),
        ]
    )
    scores, sim, cnt = [], 0.0, 0
    for video in videos:
        images = transform(torch.Tensor(uint8_video(video)).permute(0, 3, 1, 2))
        features = F.normalize(model.encode_image(images), dim=-1, p=2)
        video_sim, count = consistency_reference([f[None] for f in features])
        scores.append(video_sim / (len(features) - 1))
        sim, cnt = sim + video_sim, cnt + count
    return scores, sim / cnt


# 224×230: the patch count is the pretrained 14×14 but the image is not square, so DINO still
# interpolates its position grid.
VBENCH_SIZES = [(320, 576), (480, 848), (300, 200), (224, 230), (224, 224)]


@pytest.mark.parametrize("size", VBENCH_SIZES)
def test_temporal_dino_is_vbench_subject_consistency(size: tuple[int, int]) -> None:
    checkpoint = dino_checkpoint()
    videos = [hard_edged_videos(1, 4, *size, seed=5)[0], hard_edged_videos(1, 3, *size, seed=6)[0]]
    with torch.no_grad():
        expected, overall = subject_consistency_reference(videos, checkpoint)
        reward = build_reward("temporal", model=checkpoint)
        ours = [float(reward(video[None], [""])) for video in videos]
    # timm's ViT against DINO's forward written out: measured <= 1.6e-7 of 3.2e-5; the overall
    # mean weights values each within that by their pairs
    atol = rounding_atol(reward, reward.encoder.model.vit.num_features)
    assert ours == pytest.approx(expected, abs=atol)
    assert reference_mean(reward, ours, [len(v) for v in videos]) == pytest.approx(overall, abs=atol)


def test_temporal_dino_reads_the_hugging_face_format_too() -> None:
    frames = hard_edged_videos(2, 3, 320, 576, seed=7)
    with torch.no_grad():
        original = build_reward("temporal", model=dino_checkpoint())(frames, [""] * 2)
        converted = build_reward("temporal", model=dino_hf_folder())(frames, [""] * 2)
    assert torch.equal(converted, original)  # the same DinoViT with the same weights (q, k, v rejoined exactly)


@pytest.mark.parametrize("size", VBENCH_SIZES[:3])
def test_temporal_clip_is_vbench_background_consistency(size: tuple[int, int]) -> None:
    weights = open_clip_weights(TINY_224, seed=6)
    videos = [hard_edged_videos(1, 4, *size, seed=8)[0], hard_edged_videos(1, 2, *size, seed=9)[0]]
    with torch.no_grad():
        expected, overall = background_consistency_reference(videos, weights)
        reward = build_reward("temporal", backbone="clip", model=TINY_224, pretrained=weights)
        ours = [float(reward(video[None], [""])) for video in videos]
    # measured <= 1.5e-7 of 5e-5
    atol = rounding_atol(reward, reward.encoder.model.visual.output_dim)
    assert ours == pytest.approx(expected, abs=atol)
    assert reference_mean(reward, ours, [len(v) for v in videos]) == pytest.approx(overall, abs=atol)


def test_temporal_clamps_anticorrelated_frames_at_zero() -> None:
    """VBench's max(0, cos): a frame whose features point away from the others adds 0, not a
    negative term; ``clamp=False`` (training) keeps the cosine. The frame is found by descending
    the cosine through the reward's own gradient."""
    checkpoint = dino_checkpoint()
    reward, unclamped = (
        build_reward("temporal", model=checkpoint),
        build_reward("temporal", model=checkpoint, clamp=False),
    )
    generator = torch.Generator().manual_seed(0)
    first = torch.rand(1, 3, 64, 64, generator=generator)
    logits = torch.rand(1, 3, 64, 64, generator=generator).logit().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.3)
    target = reward.encoder.encode_images(first).detach()
    for _ in range(25):
        cosine = (target * reward.encoder.encode_images(torch.sigmoid(logits))).sum()
        optimizer.zero_grad()
        cosine.backward()
        optimizer.step()
    video = (torch.cat([first, torch.sigmoid(logits).detach()])[None] * 255).round() / 255
    with torch.no_grad():
        (expected,), _ = subject_consistency_reference([video[0]], checkpoint)
        features = reward.encoder.encode_images(video[0])
        cosine = float((features[0] * features[1]).sum())
        assert cosine < -0.05, "the data must exercise the clamp"
        assert expected == 0.0
        assert float(reward(video, [""])) == 0.0  # max(0, a cosine far below rounding's reach of 0)
        # the reward's own features of the same two frames: the dot product in another order
        atol = sum_atol(features.shape[-1] + 3, 1.0)
        assert float(unclamped(video, [""])) == pytest.approx(cosine, abs=atol)


def temporal_flickering_reference(video: torch.Tensor) -> float:
    """VBench ``cal_score``: uint8 frames, |a − b| in float32 per consecutive pair (cv2.absdiff),
    their means, (255 − mean) / 255."""
    frames = uint8_video(video)
    maes = [
        np.mean(np.abs(frames[i].astype(np.float32) - frames[i + 1].astype(np.float32))) for i in range(len(frames) - 1)
    ]
    return (255.0 - np.mean(np.array(maes)).item()) / 255.0


@pytest.mark.parametrize("size", [(320, 576), (61, 90)])
def test_flicker_is_vbench_temporal_flickering(size: tuple[int, int]) -> None:
    videos = [hard_edged_videos(1, 5, *size, seed=10)[0], hard_edged_videos(1, 3, *size, seed=11)[0]]
    expected = [temporal_flickering_reference(v) for v in videos]
    reward = build_reward("flicker")
    ours = [float(reward(v[None], [""])) for v in videos]
    # Means of (F - 1)·H·W·3 exact |differences| <= 1, torch's and numpy's blocked float32 sums
    # (blocked_sum_atol at the mean |difference|), plus the subtraction from 1 (EPS); 2.8e-6 at
    # 320×576, measured 4e-8.
    for video, got, want in zip(videos, ours, expected, strict=True):
        size = float((video[1:] - video[:-1]).abs().mean())
        atol = blocked_sum_atol(video[1:].numel(), size) + EPS
        assert got == pytest.approx(want, abs=atol)
    atol = max(blocked_sum_atol(v[1:].numel(), 1.0) for v in videos) + EPS  # a weighted mean of those
    assert reference_mean(reward, ours, [5, 3]) == pytest.approx(np.mean(expected), abs=atol)
