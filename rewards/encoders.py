"""Frozen image/text encoders behind the rewards: open_clip models and Hugging Face vision models.

Both load once per process (see :mod:`rewards.loading`), follow the frames to their device, and
return L2-normalised features, so cosines are plain dot products.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rewards.loading import HUB_PREFIX, MissingWeightsError, cached, freeze, resolve_file
from rewards.preprocess import ImagePreprocess, to_device_dtype

RANDOM_WEIGHTS = (None, "", "none", "random")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def follow_device(module: torch.nn.Module, device: torch.device) -> None:
    """Move a (shared, cached) model to the device of the frames it is asked to score; never
    to the meta device (a memory trace), which would leave the shared model without weights."""
    if device.type != "meta" and next(module.parameters()).device != device:
        module.to(device)


def load_open_clip(
    model: str, pretrained: str | None, quick_gelu: bool | None = None, dtype: str | None = None
) -> torch.nn.Module:
    """An open_clip model, frozen and cached. ``pretrained`` is a tag ("openai"), a local
    checkpoint file, ``hf:OWNER/REPO/FILE``, or ``None`` for random weights (tests, benchmarks)."""
    import open_clip

    random_weights = pretrained in RANDOM_WEIGHTS
    how = (
        f"Give a local checkpoint file with pretrained=/path/to/weights (an open_clip state dict, "
        f".bin/.pt/.safetensors), or put the tag's files in the Hugging Face cache "
        f"(open_clip.create_model({model!r}, pretrained={pretrained!r}) on a machine with network)."
    )
    source = None if random_weights else str(pretrained)
    if source is not None and source.startswith(HUB_PREFIX):
        source = str(resolve_file(source, f"open_clip weights for {model}", how))
    is_file = source is not None and Path(source).expanduser().is_file()
    if quick_gelu is None:
        # OpenAI's checkpoints use QuickGELU; open_clip's plain names ("ViT-L-14") do not, and
        # loading a tag into a mismatched model silently gives wrong features.
        tag_cfg = open_clip.get_pretrained_cfg(model, source) if source and not is_file else {}
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))

    def load() -> torch.nn.Module:
        try:
            net = open_clip.create_model(
                model,
                pretrained=str(Path(source).expanduser()) if is_file else source,
                force_quick_gelu=quick_gelu,
                require_pretrained=not random_weights,
            )
        except RuntimeError as err:
            if "not found in built-ins" in str(err):
                raise ValueError(
                    f"unknown open_clip model {model!r}; see open_clip.list_models() "
                    "(custom configs can be added with open_clip.add_model_config)"
                ) from err
            raise MissingWeightsError(
                f"open_clip weights {pretrained!r} for {model!r} are not available: {err}. {how}",
                [(f"open_clip {model} {pretrained!r}", _open_clip_fetch(model, source))],
            ) from err
        if random_weights:
            warnings.warn(f"open_clip {model!r} has random weights: its scores mean nothing", stacklevel=5)
        net = freeze(net)
        return net.to(_dtype(dtype)) if dtype else net

    return cached(("open_clip", model, source, quick_gelu, dtype), load)


def _open_clip_fetch(model: str, tag: str | None) -> str:
    """How to provide an open_clip pretrained tag's weights, in one line."""
    import open_clip

    hub = (open_clip.get_pretrained_cfg(model, tag) or {}).get("hf_hub") if tag else None
    if not hub:
        return "pass pretrained=/path/to/an/open_clip/checkpoint"
    repo, filename = os.path.split(hub)  # "org/name/file", or "org/name/" for open_clip's default file
    return f"hf download {repo} {filename or 'open_clip_pytorch_model.bin'}"


class OpenClipEncoder:
    """An open_clip model with its eval preprocessing and tokenizer.

    ``resize_mode`` overrides the model's own ("longest" pads like HPSv2's evaluation).
    Text features are cached per prompt: training repeats prompts and text gets no gradient.
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        *,
        resize_mode: str | None = None,
        quick_gelu: bool | None = None,
        dtype: str | None = None,
        text_cache_size: int = 4096,
    ) -> None:
        import open_clip

        self.model_name = model
        self.model = load_open_clip(model, pretrained, quick_gelu, dtype)
        self.preprocess = ImagePreprocess.from_open_clip(self.model, resize_mode)
        self.tokenizer = cached(("open_clip_tokenizer", model), lambda: open_clip.get_tokenizer(model))
        self._text: OrderedDict[str, Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size

    @property
    def embed_dim(self) -> int | None:
        """Width of the image features (``None`` when the tower does not say)."""
        dim = getattr(self.model.visual, "output_dim", None)
        return int(dim) if dim is not None else None

    def encode_images(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] → (N, D) unit vectors, differentiable w.r.t. ``images``."""
        follow_device(self.model, images.device)
        pixels = to_device_dtype(self.preprocess(images), self.model)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str], device: torch.device) -> Tensor:
        """(P,) prompts → (P, D) unit vectors (no gradient), computed once per distinct prompt."""
        follow_device(self.model, device)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._text))
        if missing:
            tokens = self.tokenizer(missing).to(device)
            features = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            for prompt, feature in zip(missing, features, strict=True):
                self._text[prompt] = feature
        for prompt in prompts:
            self._text.move_to_end(prompt)
        out = torch.stack([self._text[p].to(device) for p in prompts])
        while len(self._text) > self._text_cache_size:
            self._text.popitem(last=False)
        return out


class HFImageEncoder:
    """A Hugging Face vision model (DINO ViT, DINOv2, ...) giving its CLS feature per image.

    ``model`` is a hub id in the local cache or a folder written by ``save_pretrained`` that also
    holds the image processor's ``preprocessor_config.json``.
    """

    def __init__(self, model: str = "facebook/dino-vitb16", dtype: str | None = None) -> None:
        self.model_name = model
        self.model, processor = cached(("hf_vision", model, dtype), lambda: _load_hf_vision(model, dtype))
        self.preprocess = ImagePreprocess.from_hf(processor)

    def encode_images(self, images: Tensor) -> Tensor:
        follow_device(self.model, images.device)
        pixels = to_device_dtype(self.preprocess(images), self.model)
        hidden = self.model(pixel_values=pixels).last_hidden_state
        # DINO's image feature is the final (layer-normed) CLS token, as VBench uses it.
        return F.normalize(hidden[:, 0].float(), dim=-1)


def _load_hf_vision(model: str, dtype: str | None) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoImageProcessor, AutoModel

    try:
        processor = AutoImageProcessor.from_pretrained(model)
        net = AutoModel.from_pretrained(model)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MissingWeightsError(
            f"vision model {model!r} not found locally ({reason}); pass model=/path/to/a save_pretrained "
            f"folder, or fetch it with `hf download {model}` on a machine with network access",
            [("vision model", f"hf download {model}")],
        ) from err
    net = freeze(net)
    return (net.to(_dtype(dtype)) if dtype else net), processor
