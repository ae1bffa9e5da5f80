"""Frozen open_clip image/text encoders behind the rewards (DINO lives in :mod:`rewards.dino`).

They load once per process (see :mod:`rewards.loading`), follow the frames to their device, and
return L2-normalised features, so cosines are plain dot products.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
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
    model: str,
    pretrained: str | None,
    quick_gelu: bool | None = None,
    dtype: str | None = None,
    reference_quick_gelu: bool = False,
) -> torch.nn.Module:
    """An open_clip model, frozen and cached. ``pretrained`` is a tag ("openai"), a local
    checkpoint file, ``hf:OWNER/REPO/FILE``, or ``None`` for random weights (tests, benchmarks).

    ``quick_gelu`` (OpenAI's activation) when not given: the tag's, else the
    ``open_clip_config.json`` next to the weights file (hub downloads have one), else
    ``reference_quick_gelu``, what the reward's reference model uses (OpenAI CLIP for CLIPScore,
    the aesthetic predictor and VBench). A file holding non-OpenAI weights for such a reward
    needs ``quick_gelu=False``.
    """
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
    if is_file:
        refuse_torchscript(Path(source).expanduser())
    if quick_gelu is None:
        # OpenAI's checkpoints use QuickGELU; open_clip's plain names ("ViT-L-14") do not, and
        # loading such weights into a mismatched model silently gives wrong features.
        if source and not is_file:
            quick_gelu = bool(open_clip.get_pretrained_cfg(model, source).get("quick_gelu", False))
        else:
            beside = _config_beside(Path(source).expanduser()) if is_file else None
            quick_gelu = beside if beside is not None else reference_quick_gelu

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


def _config_beside(path: Path) -> bool | None:
    """``model_cfg.quick_gelu`` of the ``open_clip_config.json`` next to a weights file, if any."""
    config = path.parent / "open_clip_config.json"
    if not config.is_file():
        return None
    try:
        model_cfg = json.loads(config.read_text()).get("model_cfg", {})
    except (OSError, ValueError):
        return None
    return bool(model_cfg.get("quick_gelu", False)) if isinstance(model_cfg, dict) else None


def refuse_torchscript(path: Path) -> None:
    """OpenAI's original ``ViT-B-32.pt``/``ViT-L-14.pt`` are TorchScript archives, which load
    only through ``torch.jit.load``, not ``torch.load(weights_only=True)``; say how to convert."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return
    if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
        raise ValueError(
            f"{str(path)!r} is a TorchScript archive (OpenAI's original CLIP release). Rewards load "
            "weights with torch.load(weights_only=True) only; convert it once, on a machine you trust, "
            "with: python -c \"import torch; m = torch.jit.load('IN.pt', map_location='cpu'); "
            "torch.save({k: v for k, v in m.state_dict().items() if k not in "
            "('input_resolution', 'context_length', 'vocab_size')}, 'OUT.pt')\" "
            "and pass pretrained=OUT.pt (QuickGELU is then the default for OpenAI-based rewards)"
        )


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

    ``resize_mode`` overrides the model's own ("longest" pads like HPSv2's evaluation);
    ``rounding`` and ``clamp`` say how resized pixels are kept (see :mod:`rewards.preprocess`);
    ``preprocess`` replaces the whole transform (VBench's). Text features are cached per prompt:
    training repeats prompts and text gets no gradient.
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        *,
        resize_mode: str | None = None,
        rounding: str = "none",
        clamp: bool = True,
        preprocess: Callable[[Any], ImagePreprocess] | None = None,
        quick_gelu: bool | None = None,
        reference_quick_gelu: bool = False,
        dtype: str | None = None,
        text_cache_size: int = 4096,
    ) -> None:
        import open_clip

        self.model_name = model
        self.model = load_open_clip(model, pretrained, quick_gelu, dtype, reference_quick_gelu)
        if preprocess is not None:
            self.preprocess = preprocess(self.model)
        else:
            self.preprocess = ImagePreprocess.from_open_clip(self.model, resize_mode, rounding, clamp)
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
