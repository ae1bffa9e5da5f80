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
B32_768 = "rlr-bench-ViT-B-32-768"  # ViT-B-32's towers with the 768-d embedding the aesthetic head takes

_TINY_CONFIGS = {
    TINY: {"embed_dim": 32, "vision": 32},
    TINY_768: {"embed_dim": 768, "vision": 32},
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
                "patch_size": 16,
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
def open_clip_weights(name: str = TINY, seed: int = 0) -> str:
    """A random state dict for the tiny config ``name``, saved as a local checkpoint file."""
    import open_clip

    register_tiny_open_clip()
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    path = workdir() / f"{name}-{seed}.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=generator) * 0.05 for k, shape in shapes.items()}


@functools.cache
def aesthetic_head(kind: str = "mlp", seed: int = 0) -> str:
    """A random aesthetic head saved under the published keys (``mlp`` or ``linear``)."""
    shapes = AESTHETIC_MLP_SHAPES if kind == "mlp" else AESTHETIC_LINEAR_SHAPES
    path = workdir() / f"aesthetic-{kind}-{seed}.pth"
    torch.save(random_state_dict(shapes, seed), path)
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
                image_size=32,
                patch_size=16,
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


def smooth_videos(batch: int = 2, frames: int = 4, size: int = 40, seed: int = 0) -> torch.Tensor:
    """(B, F, 3, H, W) in [0, 1]: moving gradients, so frames differ but stay similar."""
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(batch, 1, 3, 1, 1, generator=generator) * 6
    t = torch.arange(frames).view(1, frames, 1, 1, 1) * 0.3
    y = torch.linspace(0, 3, size).view(1, 1, 1, size, 1)
    x = torch.linspace(0, 3, size).view(1, 1, 1, 1, size)
    return 0.5 + 0.4 * torch.sin(phase + t + x + 0.5 * y)
