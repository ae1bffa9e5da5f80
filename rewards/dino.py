"""DINO ViT frame features as VBench's subject consistency computes them.

Reference: Vchitect/VBench ``vbench/subject_consistency.py`` with ``vbench/utils.py``
(``dino_transform(224)``) and the model it loads, facebookresearch/dino ``hubconf.py``
``dino_vitb16`` / ``vision_transformer.py``:

- transform: the short side to 224 and the long side to ``int(224 · long / short)`` (torchvision's
  ``Resize(224, antialias=False)``: bilinear, no antialiasing, on the float frames), no crop,
  ImageNet mean and std;
- positions: DINO's ``interpolate_pos_encoding``: the patch position grid is resampled bicubically
  with scale factors ``(rows + 0.1) / √N`` and ``(cols + 0.1) / √N`` (an image that is not square
  is interpolated even when its patch count is the pretrained one);
- feature: the final layer-normed CLS token, L2-normalised.

Weights, either format, run as one timm ``VisionTransformer`` (DINO's code is timm's, key for key):
an original DINO checkpoint (``dino_vitbase16_pretrain.pth``, the file VBench downloads to
``~/.cache/vbench/dino_model/``) or a Hugging Face ViT folder or hub id in the cache
(``facebook/dino-vitb16``), converted key by key. DINO's LayerNorm epsilon (1e-6) and 64-wide
attention heads (ViT-S/B/T) hold for the original checkpoints, which carry no config.
"""

from __future__ import annotations

import json
import math
import re
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rewards.encoders import _dtype, follow_device
from rewards.loading import MissingWeightsError, cached, freeze, load_state_dict
from rewards.preprocess import ImagePreprocess, to_device_dtype

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_HEAD_WIDTH = 64
DINO_LAYER_NORM_EPS = 1e-6


def vbench_dino_transform(size: int = 224) -> ImagePreprocess:
    """VBench's ``dino_transform``: short side to ``size``, bilinear, no antialias, no clamp, no crop."""
    return ImagePreprocess(
        crop=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resize=size,
        resize_mode="shortest",
        interpolation="bilinear",
        antialias=False,
        clamp=False,
    )


def dino_position_embeddings(pos_embed: Tensor, height: int, width: int, patch: int) -> Tensor:
    """DINO's ``interpolate_pos_encoding`` for a ``height`` x ``width`` input: (1, 1 + rows·cols, D)."""
    count = pos_embed.shape[1] - 1
    rows, cols = height // patch, width // patch
    if rows * cols == count and height == width:
        return pos_embed
    side = math.sqrt(count)
    grid = pos_embed[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic")
    if tuple(grid.shape[-2:]) != (rows, cols):
        raise ValueError(f"DINO position interpolation gave a {tuple(grid.shape[-2:])} grid for {rows}x{cols} patches")
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
    return torch.cat([pos_embed[:, :1], grid], dim=1)


class DinoViT(nn.Module):
    """A DINO ViT (timm blocks, DINO's keys) whose forward is DINO's: CLS token of the final norm."""

    def __init__(self, state: dict[str, Tensor], num_heads: int | None = None) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        width = state["cls_token"].shape[-1]
        patch = state["patch_embed.proj.weight"].shape[-1]
        side = math.isqrt(state["pos_embed"].shape[1] - 1)
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
        self.patch = patch
        self.vit = VisionTransformer(
            img_size=side * patch,
            patch_size=patch,
            embed_dim=width,
            depth=depth,
            num_heads=num_heads or max(1, width // DINO_HEAD_WIDTH),
            mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / width,
            qkv_bias="blocks.0.attn.qkv.bias" in state,
            norm_layer=partial(nn.LayerNorm, eps=DINO_LAYER_NORM_EPS),
            act_layer=nn.GELU,
            num_classes=0,
        )
        self.vit.load_state_dict(state, strict=True)

    def forward(self, pixels: Tensor) -> Tensor:
        vit = self.vit
        tokens = vit.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
        cls = vit.cls_token.expand(len(tokens), -1, -1)
        positions = dino_position_embeddings(vit.pos_embed, pixels.shape[-2], pixels.shape[-1], self.patch)
        hidden = torch.cat([cls, tokens], dim=1) + positions
        for block in vit.blocks:
            hidden = block(hidden)
        return vit.norm(hidden)[:, 0]


def dino_state_dict(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """An original DINO backbone state dict: a full training checkpoint's teacher is unwrapped,
    ``module.``/``backbone.`` prefixes dropped, the projection head left out."""
    if isinstance(state.get("teacher"), dict):
        state = state["teacher"]
    for prefix in ("module.", "backbone."):
        if state and all(k.startswith(prefix) or k.startswith("head.") for k in state):
            state = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight", "norm.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(
            f"{source} is not a DINO ViT checkpoint: keys {missing} are missing (found {sorted(state)[:5]}, ...)"
        )
    return state


def hf_vit_to_dino(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Hugging Face ViTModel state dict (its stable on-disk key names) in DINO's key names."""
    state = {k.removeprefix("vit."): v for k, v in state.items()}
    out = {
        "cls_token": state["embeddings.cls_token"],
        "pos_embed": state["embeddings.position_embeddings"],
        "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": state["layernorm.weight"],
        "norm.bias": state["layernorm.bias"],
    }
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    for i in range(depth):
        hf, dino = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            qkv = [state[f"{hf}attention.attention.{n}.{part}"] for n in ("query", "key", "value")]
            out[f"{dino}attn.qkv.{part}"] = torch.cat(qkv)
            for hf_name, dino_name in (
                ("attention.output.dense", "attn.proj"),
                ("layernorm_before", "norm1"),
                ("layernorm_after", "norm2"),
                ("intermediate.dense", "mlp.fc1"),
                ("output.dense", "mlp.fc2"),
            ):
                out[f"{dino}{dino_name}.{part}"] = state[f"{hf}{hf_name}.{part}"]
    return out


def _hf_folder(model: str) -> Path:
    """A local folder, or a hub id resolved in the Hugging Face cache (offline, no download)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    except Exception as err:  # noqa: BLE001  (offline, missing repo, network: the same advice)
        raise MissingWeightsError(
            f"DINO model {model!r} not found locally ({type(err).__name__}); pass model=/path/to/"
            "dino_vitbase16_pretrain.pth (the original checkpoint VBench uses) or a save_pretrained "
            f"folder, or fetch it with `hf download {model}` on a machine with network access",
            [("DINO model", f"hf download {model}")],
        ) from err


def load_dino(model: str, dtype: str | None = None) -> DinoViT:
    """A frozen DINO ViT from an original checkpoint file or a Hugging Face ViT folder / hub id."""
    path = Path(model).expanduser()
    if path.is_file():
        net = DinoViT(dino_state_dict(load_state_dict(path), repr(str(path))))
    else:
        folder = _hf_folder(model)
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
        if weights is None:
            raise MissingWeightsError(
                f"DINO model {model!r}: no model.safetensors or pytorch_model.bin in {str(folder)!r}; pass "
                "model=/path/to/dino_vitbase16_pretrain.pth or a save_pretrained folder"
            )
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        net = DinoViT(hf_vit_to_dino(load_state_dict(weights)), config.get("num_attention_heads"))
    net = freeze(net)
    return net.to(_dtype(dtype)) if dtype else net


class DinoEncoder:
    """Frames → unit DINO CLS features, with VBench's transform (differentiable w.r.t. the frames)."""

    def __init__(self, model: str = "facebook/dino-vitb16", dtype: str | None = None, size: int = 224) -> None:
        self.model_name = model
        self.model = cached(("dino", str(model), dtype), lambda: load_dino(model, dtype))
        self.preprocess = vbench_dino_transform(size)

    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] → (N, D) unit vectors."""
        follow_device(self.model, images.device)
        pixels = to_device_dtype(self.preprocess(images), self.model)
        return F.normalize(self.model(pixels).float(), dim=-1)


class DinoSizes:
    """A weight-free DINO for costing (``rlr-video plan`` without the checkpoint): VBench's
    ``dino_vitb16`` (768 wide, 12 layers, 12 heads, 16-pixel patches) behind VBench's transform,
    whose token count follows the frames' shape (351 tokens for 576x320: 14 x 25 patches and CLS)."""

    name = "temporal"
    frame_sampling = "all"

    def __init__(self, size: int = 224) -> None:
        self.encoder = _SizesOnly(vbench_dino_transform(size))
        self.vision = {"width": 768, "layers": 12, "heads": 12, "patch": 16, "itemsize": 4}
        self.chunk_size, self.checkpoint = 16, False

    def weight_bytes(self) -> int:
        """ViT-B/16's 86 million parameters in float32 (the reward's default dtype): 12 layers of
        attention (4 x 768^2) and MLP (2 x 768 x 3072), the patch embedding and positions."""
        width = self.vision["width"]
        blocks = self.vision["layers"] * (4 * width * width + 2 * width * 4 * width)
        return (blocks + 3 * 16 * 16 * width + 197 * width) * 4


class _SizesOnly:
    """An encoder's preprocessing without its model."""

    def __init__(self, preprocess: ImagePreprocess) -> None:
        self.preprocess = preprocess
