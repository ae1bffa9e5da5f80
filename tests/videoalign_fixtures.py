"""A tiny VideoAlign VideoReward in the hub layout, built at run time (nothing is downloaded).

- base (``Qwen/Qwen2-VL-2B-Instruct``'s stand-in): a tiny ``Qwen2VLForConditionalGeneration``
  (one vision block, two decoder layers, 32 wide) with Qwen2-VL-2B-Instruct's processor numbers
  and chat template, and a byte-level BPE tokenizer trained here on VideoAlign's prompt so the
  texts stay a few hundred tokens long;
- VideoReward: ``model_config.json`` in VideoAlign's schema, ``checkpoint-7/model.pth`` (the
  whole PEFT model's state dict, keys in transformers 4.45's layout as VideoAlign saved them,
  LoRA B non-zero so the adapters matter) and ``checkpoint-7/tokenizer`` with the reward tokens.
"""

from __future__ import annotations

import functools
import json

import torch
from reward_fixtures import workdir

REWARD_TOKENS = ["<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>"]
QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2-VL-2B-Instruct's chat template (its chat_template.json).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen2-VL-2B-Instruct's preprocessor_config.json numbers.
PROCESSOR = {
    "min_pixels": 56 * 56,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
NORM = {"VQ_mean": 0.3, "VQ_std": 1.7, "MQ_mean": -0.2, "MQ_std": 0.6, "TA_mean": 0.05, "TA_std": 2.5}
STEP = 7


def base_tokenizer():
    """Qwen2's byte-level BPE tokenizer class on a vocabulary trained on VideoAlign's prompt."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import Qwen2Tokenizer

    from rewards.videoalign.prompt import DETAILED_PROMPT_WITH_SPECIAL_TOKEN

    corpus = [DETAILED_PROMPT_WITH_SPECIAL_TOKEN] * 3 + ["a red circle moving left, a blue square moving up"]
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(corpus, vocab_size=2000, min_frequency=1, show_progress=False)
    model = json.loads(trainer._tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL[1:]})
    return tokenizer


@functools.cache
def tiny_base() -> str:
    """A tiny Qwen2-VL, its processor and chat template, as ``save_pretrained`` writes them."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = base_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "max_position_embeddings": 4096,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    folder = workdir() / "Qwen2-VL-tiny"
    model.save_pretrained(folder)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**PROCESSOR),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**PROCESSOR),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return str(folder)


def transformers4_key(key: str) -> str:
    """transformers 5's Qwen2-VL names → 4.45's (``model.language_model.`` → ``model.``,
    ``model.visual.`` → ``visual.``), inside the PEFT prefix."""
    prefix = "base_model.model."
    name = key[len(prefix) :] if key.startswith(prefix) else key
    if name.startswith("model.language_model."):
        name = "model." + name[len("model.language_model.") :]
    elif name.startswith("model.visual."):
        name = name[len("model.") :]
    return (prefix if key.startswith(prefix) else "") + name


def model_config(base: str, max_frame_pixels: int) -> dict:
    """VideoAlign's saved configs (``save_configs_to_json`` + the released inference_config)."""
    return {
        "data_config": {
            "meta_data": "/path/to/dataset/meta_data.csv",
            "data_dir": "/path/to/dataset",
            "meta_data_test": None,
            "max_frame_pixels": max_frame_pixels,
            "num_frames": None,
            "fps": 2.0,
            "p_shuffle_frames": 0.0,
            "p_color_jitter": 0.0,
            "eval_dim": ["VQ", "MQ", "TA"],
            "prompt_template_type": "detailed_special",
            "add_noise": False,
            "sample_type": "uniform",
            "use_tied_data": True,
        },
        "training_args": {"output_dir": "rm_output", "bf16": True},
        "model_config": {
            "model_name_or_path": base,
            "model_revision": "main",
            "output_dim": 1,
            "use_special_tokens": True,
            "freeze_vision_tower": False,
            "freeze_llm": False,
            "tune_merger": True,
            "torch_dtype": "bfloat16",
            "reward_token": "special",
            "loss_type": "btt",
        },
        "peft_lora_config": {
            "lora_enable": True,
            "vision_lora": False,
            "lora_r": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.05,
            "lora_target_modules": None,
            "lora_namespan_exclude": ["lm_head", "rm_head", "embed_tokens", "visual"],
            "lora_modules_to_save": None,
            "lora_task_type": "CAUSAL_LM",
            "use_rslora": False,
            "num_lora_modules": -1,
        },
        "inference_config": NORM,
    }


@functools.cache
def tiny_videoreward(max_frame_pixels: int = 200704) -> str:
    """The VideoReward folder: model_config.json, checkpoint-7/model.pth, checkpoint-7/tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    base = tiny_base()
    processor = AutoProcessor.from_pretrained(base, padding_side="right")
    processor.tokenizer.add_special_tokens({"additional_special_tokens": REWARD_TOKENS})
    model = Qwen2VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    model.rm_head = torch.nn.Linear(32, 1, bias=False)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))
        and not any(part in name for part in ("lm_head", "rm_head", "embed_tokens", "visual"))
    ]
    model = get_peft_model(model, LoraConfig(target_modules=targets, r=4, lora_alpha=8, task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "rm_head" in name:  # peft starts B at zero: make the adapters count
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        embed = model.get_input_embeddings().weight
        embed[-3:] = torch.randn(3, embed.shape[1], generator=generator)
    folder = workdir() / f"VideoReward-{max_frame_pixels}"
    checkpoint = folder / f"checkpoint-{STEP}"
    checkpoint.mkdir(parents=True)
    torch.save({transformers4_key(k): v for k, v in model.state_dict().items()}, checkpoint / "model.pth")
    processor.tokenizer.save_pretrained(checkpoint / "tokenizer")
    (folder / "model_config.json").write_text(json.dumps(model_config(base, max_frame_pixels), indent=4))
    (folder / "checkpoint-3").mkdir()  # an older step without weights: the latest is read
    return str(folder)
