"""Tiny random-weight reward models built at run time (nothing is downloaded).

- open_clip: small ViT configs registered with ``open_clip.add_model_config``; its BPE
  tokenizer ships with the wheel. ``TINY_768`` has the 768-d embedding the aesthetic heads take.
- transformers: a tiny CLIP (PickScore's class) and a tiny ViT (DINO's class), written with
  ``save_pretrained`` and loaded back through the users' code path.
- aesthetic heads: random tensors under the published state-dict keys, built from the key list
  (not from our module), so a mismatch with the published files fails the test.

Everything lives in one temporary folder per test process and is built once.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import torch

TINY = "rlr-test-tiny-clip"
TINY_768 = "rlr-test-tiny-clip-768"
# Tiny towers that read 224×224 images (32-pixel patches), so the references' 224 crops, their
# margins and rounding are exercised at the real size.
TINY_224 = "rlr-test-tiny-clip-224"
TINY_224_768 = "rlr-test-tiny-clip-224-768"
B32_768 = "rlr-bench-ViT-B-32-768"  # ViT-B-32's towers with the 768-d embedding the aesthetic head takes

_TINY_CONFIGS = {
    TINY: {"embed_dim": 32, "vision": 32, "patch": 16},
    TINY_768: {"embed_dim": 768, "vision": 32, "patch": 16},
    TINY_224: {"embed_dim": 32, "vision": 224, "patch": 32},
    TINY_224_768: {"embed_dim": 768, "vision": 224, "patch": 32},
}

# The published improved-aesthetic-predictor keys and shapes (sac+logos+ava1-l14-linearMSE.pth).
AESTHETIC_MLP_SHAPES = {
    "layers.0.weight": (1024, 768),
    "layers.0.bias": (1024,),
    "layers.2.weight": (128, 1024),
    "layers.2.bias": (128,),
    "layers.4.weight": (64, 128),
    "layers.4.bias": (64,),
    "layers.6.weight": (16, 64),
    "layers.6.bias": (16,),
    "layers.7.weight": (1, 16),
    "layers.7.bias": (1,),
}
# The LAION linear head (sa_0_4_vit_l_14_linear.pth).
AESTHETIC_LINEAR_SHAPES = {"weight": (1, 768), "bias": (1,)}


@functools.cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="rlr-reward-tests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def register_tiny_open_clip() -> None:
    """Register the tiny open_clip configs (idempotent)."""
    import open_clip

    folder = workdir() / "open_clip_configs"
    folder.mkdir(exist_ok=True)
    for name, dims in _TINY_CONFIGS.items():
        config = {
            "embed_dim": dims["embed_dim"],
            "vision_cfg": {
                "image_size": dims["vision"],
                "layers": 1,
                "width": 32,
                "head_width": 16,
                "patch_size": dims["patch"],
            },
            "text_cfg": {
                "context_length": 77,
                "vocab_size": 49408,
                "width": 32,
                "heads": 2,
                "layers": 1,
            },
        }
        (folder / f"{name}.json").write_text(json.dumps(config))
    b32 = open_clip.get_model_config("ViT-B-32")
    (folder / f"{B32_768}.json").write_text(json.dumps({**b32, "embed_dim": 768}))
    open_clip.add_model_config(folder)


@functools.cache
def open_clip_weights(name: str = TINY, seed: int = 0, wrap: bool = False) -> str:
    """A random state dict for the tiny config ``name``, saved as a local checkpoint file
    (``wrap``: inside ``{"state_dict": ...}``, as HPSv2's checkpoints are)."""
    import open_clip

    register_tiny_open_clip()
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    state = model.state_dict()
    path = workdir() / f"{name}-{seed}{'-wrapped' if wrap else ''}.pt"
    torch.save({"state_dict": state} if wrap else state, path)
    return str(path)


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=generator) * 0.05 for k, shape in shapes.items()}


@functools.cache
def aesthetic_head(kind: str = "mlp", seed: int = 0, unit: bool = False) -> str:
    """A random aesthetic head saved under the published keys (``mlp`` or ``linear``).

    ``unit``: weights scaled by 1/√fan-in, so the score moves with the embedding as much as a
    trained head's does (the default 0.05 scale leaves it nearly constant)."""
    shapes = AESTHETIC_MLP_SHAPES if kind == "mlp" else AESTHETIC_LINEAR_SHAPES
    state = random_state_dict(shapes, seed)
    if unit:
        state = {k: v / 0.05 / (v.shape[-1] ** 0.5 if v.ndim == 2 else 10.0) for k, v in state.items()}
    path = workdir() / f"aesthetic-{kind}-{seed}{'-unit' if unit else ''}.pth"
    torch.save(state, path)
    return str(path)


def _tiny_bpe_files(folder: Path, merges: int | None = 300) -> tuple[Path, Path]:
    """CLIP's vocab.json/merges.txt cut to ``merges`` merges (``None``: all, CLIP's 49408 tokens),
    from open_clip's shipped BPE file."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")[1 : 1 + (merges or 49152 - 256 - 2)]
    pairs = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(p) for p in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


@functools.cache
def tiny_pickscore(seed: int = 0, size: str = "tiny") -> str:
    """A tiny transformers CLIPModel plus CLIPProcessor, saved with ``save_pretrained``.

    ``size="224"`` reads 224×224 images in 32-pixel patches (PickScore's processor sizes);
    ``size="b32"`` builds transformers' default CLIPConfig instead (ViT-B/32 sized, full vocab).
    """
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    folder = workdir() / f"pickscore-{seed}-{size}"
    folder.mkdir()
    tokenizer = CLIPTokenizer(*map(str, _tiny_bpe_files(folder, None if size == "b32" else 300)))
    vocab = len(tokenizer)
    config = (
        CLIPConfig()
        if size == "b32"
        else CLIPConfig(
            text_config=dict(
                vocab_size=vocab,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=37,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            ),
            vision_config=dict(
                image_size=224 if size == "224" else 32,
                patch_size=32 if size == "224" else 16,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=37,
            ),
            projection_dim=16,
        )
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    side = config.vision_config.image_size
    image_processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


@functools.cache
def tiny_dino(seed: int = 0, size: str = "tiny") -> str:
    """A tiny transformers ViTModel (DINO's class) plus its image processor.

    ``size="b16"`` builds transformers' default ViTConfig instead: ViT-B/16, DINO's real size.
    """
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = workdir() / f"dino-{seed}-{size}"
    config = (
        ViTConfig()
        if size == "b16"
        else ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
            image_size=32,
            patch_size=16,
        )
    )
    torch.manual_seed(seed)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    side = config.image_size
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(folder)
    return str(folder)


def dino_shapes(width: int = 128, depth: int = 1, patch: int = 16, grid: int = 14) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of an original DINO ViT backbone (facebookresearch/dino
    ``vision_transformer.py``, as ``dino_vitbase16_pretrain.pth`` holds them), from the key list."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, width),
        "pos_embed": (1, grid * grid + 1, width),
        "patch_embed.proj.weight": (width, 3, patch, patch),
        "patch_embed.proj.bias": (width,),
    }
    for i in range(depth):
        block = {
            "norm1.weight": (width,),
            "norm1.bias": (width,),
            "attn.qkv.weight": (3 * width, width),
            "attn.qkv.bias": (3 * width,),
            "attn.proj.weight": (width, width),
            "attn.proj.bias": (width,),
            "norm2.weight": (width,),
            "norm2.bias": (width,),
            "mlp.fc1.weight": (4 * width, width),
            "mlp.fc1.bias": (4 * width,),
            "mlp.fc2.weight": (width, 4 * width),
            "mlp.fc2.bias": (width,),
        }
        shapes.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    shapes.update({"norm.weight": (width,), "norm.bias": (width,)})
    return shapes


@functools.cache
def dino_checkpoint(seed: int = 0) -> str:
    """A tiny DINO backbone (128 wide: two 64-wide heads, one block, 16-pixel patches, a 14×14
    position grid) with random weights at trained-like scales, saved as DINO's own ``.pth``."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in dino_shapes().items():
        noise = torch.randn(shape, generator=generator)
        if key.endswith("norm1.weight") or key.endswith("norm2.weight") or key == "norm.weight":
            state[key] = 1 + 0.1 * noise
        elif key in ("cls_token", "pos_embed"):
            state[key] = 0.5 * noise
        elif len(shape) >= 2:
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            state[key] = noise / fan_in**0.5
        else:
            state[key] = 0.1 * noise
    path = workdir() / f"dino_vittiny16-{seed}.pth"
    torch.save(state, path)
    return str(path)


@functools.cache
def dino_hf_folder(seed: int = 0) -> str:
    """The same weights as :func:`dino_checkpoint`, as a Hugging Face ViTModel folder."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    dino = torch.load(dino_checkpoint(seed), weights_only=True)
    width = dino["cls_token"].shape[-1]
    config = ViTConfig(
        hidden_size=width,
        num_hidden_layers=1,
        num_attention_heads=width // 64,
        intermediate_size=4 * width,
        image_size=224,
        patch_size=16,
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    model = ViTModel(config, add_pooling_layer=False)
    hf = {
        "embeddings.cls_token": dino["cls_token"],
        "embeddings.position_embeddings": dino["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": dino["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": dino["patch_embed.proj.bias"],
        "layernorm.weight": dino["norm.weight"],
        "layernorm.bias": dino["norm.bias"],
    }
    layer = {
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.o_proj": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for part in ("weight", "bias"):
        q, k, v = dino[f"blocks.0.attn.qkv.{part}"].chunk(3)
        hf.update({f"layers.0.attention.{n}_proj.{part}": t for n, t in zip("qkv", (q, k, v))})
        hf.update({f"layers.0.{ours}.{part}": dino[f"blocks.0.{theirs}.{part}"] for ours, theirs in layer.items()})
    model.load_state_dict(hf, strict=True)
    folder = workdir() / f"dino-hf-{seed}"
    model.save_pretrained(folder)
    # facebook/dino-vitb16's processor (rewards use VBench's transform instead, but the hub
    # folder has one).
    ViTImageProcessor(
        size={"height": 224, "width": 224}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    ).save_pretrained(folder)
    return str(folder)


def eight_bit(frames: torch.Tensor) -> torch.Tensor:
    """Frames rounded to 8 bits, as decoded video files are."""
    return (frames.clamp(0, 1) * 255).round() / 255


def hard_edged_videos(batch: int, frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(B, F, 3, H, W) 8-bit frames with hard edges (a moving bar, black and white blocks) over
    smooth colour ramps and noise: resizes overshoot at the edges, so clamps and rounding matter."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(1, 1, 1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, 1, 1, width)
    t = torch.arange(frames).view(1, frames, 1, 1, 1) / max(1, frames)
    phase = torch.rand(batch, 1, 3, 1, 1, generator=generator)
    video = 0.5 + 0.35 * torch.sin(6 * x + 3 * y + 2 * t + 6 * phase)
    bar = ((x - 0.2 - 0.3 * t).abs() < 0.08) & (y > 0.3)
    video = torch.where(bar, torch.ones_like(video), video)
    blocks = ((x * 7).floor() + (y * 5).floor()) % 2 == 0
    video = torch.where(blocks & (y > 0.75), torch.zeros_like(video), video)
    noise = torch.rand(batch, frames, 3, height, width, generator=generator)
    return eight_bit(0.9 * video + 0.1 * noise)


def smooth_videos(batch: int = 2, frames: int = 4, size: int = 40, seed: int = 0) -> torch.Tensor:
    """(B, F, 3, H, W) in [0, 1]: moving gradients, so frames differ but stay similar."""
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(batch, 1, 3, 1, 1, generator=generator) * 6
    t = torch.arange(frames).view(1, frames, 1, 1, 1) * 0.3
    y = torch.linspace(0, 3, size).view(1, 1, 1, size, 1)
    x = torch.linspace(0, 3, size).view(1, 1, 1, 1, size)
    return 0.5 + 0.4 * torch.sin(phase + t + x + 0.5 * y)
