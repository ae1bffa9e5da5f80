"""Loading VideoAlign's VideoReward from its hub layout.

Reference: KwaiVGI/VideoAlign ``inference.py`` (``VideoVLMRewardInference``), ``train_reward.py``
(``create_model_and_processor``, ``find_target_linear_names``) and ``utils.py``
(``load_model_from_checkpoint``). The layout (``KwaiVGI/VideoReward`` on the hub)::

    model_config.json             data_config, model_config, peft_lora_config, inference_config
    checkpoint-<step>/model.pth   the whole PEFT model's state dict (LoRA on the language model)
    checkpoint-<step>/tokenizer/  Qwen2-VL's tokenizer with the three reward tokens (optional:
                                  without it they are added to the base's, as VideoAlign does)

and the base, ``model_config.model_name_or_path`` (``Qwen/Qwen2-VL-2B-Instruct``), from the
Hugging Face cache: its config, weights, processor and chat template. The model is the base
Qwen2-VL with its embeddings resized to the tokenizer, a bias-free ``rm_head`` linear layer on the
last hidden states, and LoRA (peft) on every linear layer of the language model, as
``get_peft_model`` built it in training; ``model.pth`` is read with ``weights_only=True``. Its keys
are transformers 4.45's (``model.layers``, ``visual``); they are renamed to transformers 5's
(``model.language_model.layers``, ``model.visual``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rewards.encoders import _dtype
from rewards.loading import MissingWeightsError, freeze
from rewards.videoalign.prompt import REWARD_TOKENS

DEFAULT_MODEL = "KwaiVGI/VideoReward"
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class VideoAlignConfig:
    """What ``model_config.json`` says, with VideoAlign's defaults for missing keys."""

    base: str
    fps: float = 2.0
    num_frames: int | None = None
    max_pixels: int = 240 * 320
    eval_dim: tuple[str, ...] = ("VQ",)
    template: str = "none"
    sample_type: str = "uniform"
    output_dim: int = 1
    reward_token: str = "last"
    use_special_tokens: bool = False
    lora: dict[str, Any] = field(default_factory=dict)
    norm: dict[str, float] | None = None

    @classmethod
    def read(cls, path: Path) -> VideoAlignConfig:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"videoalign: cannot read {str(path)!r}: {err}") from err
        data, model = raw.get("data_config", {}), raw.get("model_config", {})
        if not model.get("model_name_or_path"):
            raise ValueError(f"videoalign: {str(path)!r} has no model_config.model_name_or_path (the base model)")
        eval_dim = data.get("eval_dim", "VQ")
        use_special = bool(model.get("use_special_tokens", False))
        return cls(
            base=str(model["model_name_or_path"]),
            fps=float(data.get("fps") or 2.0),
            num_frames=int(data["num_frames"]) if data.get("num_frames") is not None else None,
            max_pixels=int(data.get("max_frame_pixels", 240 * 320)),
            eval_dim=(eval_dim,) if isinstance(eval_dim, str) else tuple(eval_dim),
            template=str(data.get("prompt_template_type", "none")),
            sample_type=str(data.get("sample_type", "uniform")),
            output_dim=int(model.get("output_dim", 1)),
            # VideoAlign's model switches to the special tokens whenever it is given their ids.
            reward_token="special" if use_special else str(model.get("reward_token", "last")),
            use_special_tokens=use_special,
            lora=dict(raw.get("peft_lora_config", {})),
            norm=raw.get("inference_config"),
        )


def resolve_folder(model: str) -> Path:
    """A local VideoReward folder, or a hub id in the Hugging Face cache (nothing is downloaded)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, allow_patterns=["model_config.json", "checkpoint-*/**"]))
    except Exception as err:  # noqa: BLE001  (offline, missing repo, network: the same advice)
        raise MissingWeightsError(
            f"videoalign: {model!r} is neither a folder nor in the Hugging Face cache ({type(err).__name__}). "
            f"Pass model=/path/to/VideoReward (a folder with model_config.json and checkpoint-*/model.pth), "
            f"or fetch it with `hf download {DEFAULT_MODEL}` on a machine with network access"
        ) from err


def checkpoint_dir(folder: Path, step: int | None = None) -> Path:
    """``checkpoint-<step>``, by default the latest (``load_model_from_checkpoint``)."""
    found = sorted(
        (p for p in folder.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)),
        key=lambda p: int(p.name.split("-")[1]),
    )
    if not found:
        raise MissingWeightsError(f"videoalign: no checkpoint-<step> folder in {str(folder)!r}")
    if step is None:
        return found[-1]
    chosen = folder / f"checkpoint-{step}"
    if chosen not in found:
        raise MissingWeightsError(
            f"videoalign: {str(chosen)!r} not found; the folder has steps {[int(p.name[11:]) for p in found]}"
        )
    return chosen


def lora_targets(model: nn.Module, exclude: list[str], count: int = -1) -> list[str]:
    """``find_target_linear_names``: every Linear and Embedding whose name holds no excluded part
    (the last ``count`` of them when ``count`` > 0)."""
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Embedding)) and not any(part in name for part in exclude)
    ]
    return names[-count:] if count > 0 else names


def transformers5_key(key: str) -> str:
    """A transformers 4.45 Qwen2-VL parameter name (inside the PEFT prefix) in transformers 5's layout."""
    prefix = PEFT_PREFIX if key.startswith(PEFT_PREFIX) else ""
    name = key[len(prefix) :]
    if name.startswith("visual."):
        name = "model." + name
    elif name.startswith("model.") and not name.startswith(("model.language_model.", "model.visual.")):
        name = "model.language_model." + name[len("model.") :]
    return prefix + name


def load_tokenizer(checkpoint: Path, processor: Any) -> Any:
    """The checkpoint's tokenizer, or the base's with the three reward tokens added."""
    from transformers import AutoTokenizer

    folder = checkpoint / "tokenizer"
    if folder.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="right")
    else:
        tokenizer = processor.tokenizer
        tokenizer.add_special_tokens({"additional_special_tokens": list(REWARD_TOKENS)})
    tokenizer.padding_side = "right"
    return tokenizer


def load_processor(base: str) -> Any:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(base)
    except (OSError, ValueError) as err:
        raise MissingWeightsError(
            f"videoalign: the base model {base!r} (its processor and chat template) is not available offline "
            f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}); fetch it with "
            f"`hf download {base}` or pass base=/path/to/Qwen2-VL-2B-Instruct"
        ) from err


def load_model(config: VideoAlignConfig, checkpoint: Path, vocab: int, dtype: str | None) -> nn.Module:
    """The base Qwen2-VL with ``rm_head`` and LoRA, loaded from ``checkpoint/model.pth``; frozen."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    weights = checkpoint / "model.pth"
    if not weights.is_file():
        raise MissingWeightsError(
            f"videoalign: {str(weights)!r} not found (the released checkpoints hold the whole model there)"
        )
    try:
        # The base's weights are all overwritten by model.pth; its config sizes the model.
        model = Qwen2VLForConditionalGeneration.from_pretrained(
            config.base, dtype=_dtype(dtype) or torch.float32, attn_implementation="sdpa"
        )
    except (OSError, ValueError) as err:
        raise MissingWeightsError(
            f"videoalign: the base model {config.base!r} is not available offline ({type(err).__name__}); fetch it "
            f"with `hf download {config.base}` or pass base=/path/to/Qwen2-VL-2B-Instruct"
        ) from err
    hidden = model.config.get_text_config().hidden_size
    model.rm_head = nn.Linear(hidden, config.output_dim, bias=False)
    model.resize_token_embeddings(vocab, mean_resizing=False)  # model.pth overwrites the rows
    lora = config.lora
    if lora.get("lora_enable", False):
        exclude = list(lora.get("lora_namespan_exclude") or [])
        peft_config = LoraConfig(
            target_modules=lora_targets(model, exclude, int(lora.get("num_lora_modules", -1))),
            r=int(lora.get("lora_r", 16)),
            lora_alpha=int(lora.get("lora_alpha", 32)),
            lora_dropout=float(lora.get("lora_dropout", 0.05)),
            task_type=lora.get("lora_task_type", "CAUSAL_LM"),
            use_rslora=bool(lora.get("use_rslora", False)),
            bias="none",
            modules_to_save=lora.get("lora_modules_to_save"),
        )
        model = get_peft_model(model, peft_config)
    state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    state = {transformers5_key(k): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"videoalign: {str(weights)!r} does not fit the model model_config.json describes: "
            f"missing {sorted(missing)[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {sorted(unexpected)[:4]}{'...' if len(unexpected) > 4 else ''}"
        )
    model = freeze(model)
    return model.to(_dtype(dtype)) if dtype else model


def reward_model(model: nn.Module) -> nn.Module:
    """The Qwen2VLForConditionalGeneration (with ``rm_head``) inside a PEFT wrapper, if any."""
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if inner is not None and hasattr(inner, "rm_head") else model
