"""VideoAlign's sizes without its weights: what the memory planner needs (``rlr-video plan`` on a
machine without the checkpoint), from published numbers.

- the base, ``Qwen/Qwen2-VL-2B-Instruct``: its vision tower is transformers' ``Qwen2VLVisionConfig``
  default (32 layers, 1280 wide, 16 heads, MLP ratio 4; 14-pixel patches, 2 frames a patch, 2x2
  merge), its language model Qwen2-1.5B's shape (28 layers, 1536 wide, 12 query and 2 key/value
  heads, 8960 MLP), its processor Qwen2-VL-2B-Instruct's ``preprocessor_config.json``;
- the reward, ``KwaiVGI/VideoReward``'s ``model_config.json``: 2 fps, ``max_frame_pixels`` 200704
  (448 x 448), the ``detailed_special`` prompt over VQ, MQ and TA. A local VideoReward folder's
  own ``model_config.json`` is read instead when there is one.

The text length is an estimate: the template's characters / 4 (English BPE text) plus the chat
template's few tokens; the loaded reward counts them exactly (``VideoAlignReward.input_sizes``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rewards.videoalign.checkpoint import VideoAlignConfig
from rewards.videoalign.frames import PixelConfig, frame_plan
from rewards.videoalign.prompt import build_prompt

QWEN2_VL_2B = {
    "vision_layers": 32,
    "vision_width": 1280,
    "vision_heads": 16,
    "vision_mlp": 1280 * 4,
    "vision_temporal": 2,
    "text_layers": 28,
    "text_width": 1536,
    "text_heads": 12,
    "text_kv_heads": 2,
    "text_mlp": 8960,
}
QWEN2_VL_2B_PROCESSOR = PixelConfig(
    patch=14,
    temporal=2,
    merge=2,
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
    min_pixels=56 * 56,
    max_pixels=28 * 28 * 16384,
)
VIDEOREWARD = {"fps": 2.0, "max_pixels": 200704, "template": "detailed_special", "eval_dim": ("VQ", "MQ", "TA")}
VOCABULARY = 151936  # Qwen2-VL's vocabulary (its config.json's vocab_size)
CHAT_TOKENS = 24  # Qwen2-VL's chat template around the user text: system turn, roles, vision markers
CHARACTERS_PER_TOKEN = 4  # English text in a byte-level BPE of 150k tokens: about 4 characters a token
ITEMSIZE = {"bf16": 2, "fp16": 2, "fp32": 4, None: 4}


class VideoAlignSizes:
    """A weight-free ``videoalign`` for costing: :meth:`input_sizes` and :meth:`model_dims` as the
    loaded reward gives them (the text length estimated). Accepts the reward's options."""

    name = "videoalign"
    frame_sampling = "own"
    takes_video_fps = True

    def __init__(
        self,
        model: str | None = None,
        video_fps: float | None = None,
        fps: float | None = None,
        num_frames: int | None = None,
        max_pixels: int | None = None,
        dtype: str | None = "bf16",
        **_: Any,
    ) -> None:
        folder = Path(model).expanduser() if model else None
        config = folder / "model_config.json" if folder is not None else None
        if config is not None and config.is_file():
            read = VideoAlignConfig.read(config)
            defaults = {"fps": read.fps, "max_pixels": read.max_pixels, "template": read.template}
            defaults["eval_dim"], default_frames = read.eval_dim, read.num_frames
        else:
            defaults, default_frames = dict(VIDEOREWARD), None
        self.video_fps = video_fps
        self.fps = float(fps) if fps is not None else defaults["fps"]
        self.num_frames = num_frames if num_frames is not None else default_frames
        self.max_pixels = int(max_pixels) if max_pixels is not None else defaults["max_pixels"]
        self.template, self.eval_dim = defaults["template"], defaults["eval_dim"]
        self.itemsize = ITEMSIZE.get(dtype, 4)

    def input_sizes(self, count: int, height: int, width: int, video_fps: float | None = None) -> dict[str, Any]:
        rate = video_fps if video_fps is not None else self.video_fps
        plan = frame_plan(count, height, width, rate, self.fps, self.num_frames, self.max_pixels, QWEN2_VL_2B_PROCESSOR)
        text = build_prompt("", self.eval_dim, self.template)
        return {
            **plan,
            "text_tokens": plan["vision_tokens"] + math.ceil(len(text) / CHARACTERS_PER_TOKEN) + CHAT_TOKENS,
        }

    def model_dims(self) -> dict[str, int]:
        return {**QWEN2_VL_2B, "itemsize": self.itemsize}

    def weight_bytes(self) -> int:
        """The weights' bytes: Qwen2-VL-2B's 2.2 billion parameters (its matrices, counted from
        the sizes above; norms, biases and the LoRA adapters merged into them left out)."""
        d = QWEN2_VL_2B
        e, m = d["vision_width"], d["vision_mlp"]
        patch_in = 3 * QWEN2_VL_2B_PROCESSOR.temporal * QWEN2_VL_2B_PROCESSOR.patch**2
        merge = QWEN2_VL_2B_PROCESSOR.merge**2 * e
        vision = e * patch_in + d["vision_layers"] * (4 * e * e + 2 * e * m) + merge * merge + merge * d["text_width"]
        w, kv = d["text_width"], d["text_width"] // d["text_heads"] * d["text_kv_heads"]
        text = d["text_layers"] * (2 * w * w + 2 * w * kv + 3 * w * d["text_mlp"]) + VOCABULARY * w  # tied head
        return (vision + text) * self.itemsize
