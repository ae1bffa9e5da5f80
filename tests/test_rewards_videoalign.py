"""``videoalign`` against an independent re-implementation of VideoAlign's ``inference.py`` path
(KwaiVGI/VideoAlign: ``vision_process.py`` sampling and resizing, the Qwen2-VL processor,
``Qwen2VLRewardModelBT.forward``, ``_norm``), on a tiny random Qwen2-VL saved in the hub layout
(tests/videoalign_fixtures.py), at odd frame counts and aspect ratios.

The reference here decodes nothing: the uint8 frames are what decord would return. It samples and
resizes them as ``fetch_video`` does (torchvision on the uint8 tensor), runs the installed
``Qwen2VLProcessor`` for the chat text, token expansion, rescaling, normalisation and patches, and
the model forward VideoAlign wrote (transformers 4.45's names mapped to 5's by hand here).

Tolerance: both paths run the same float32 arithmetic on the same pixels but in different orders
(batched vs processor patches, expanded text vs processor expansion): the raw head logits agree
to the model's depth × √fan-in relative rounding (tests/tolerances.py ``network_rtol``: 51
linear layers, the 1,176-term patch embedding the widest, 2e-4; observed ~1e-6), each head
divided by its normalising std.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from tolerances import assert_max_abs, layers, network_rtol, sum_atol
from torchvision.transforms import InterpolationMode
from videoalign_fixtures import NORM, QWEN_SPECIAL, REWARD_TOKENS, STEP, tiny_base, tiny_videoreward

from rewards import MissingWeightsError, build_reward
from rewards.composite import CompositeReward
from rewards.frames import frame_sampling, select_frames
from rewards.videoalign.prompt import DETAILED_PROMPT_WITH_SPECIAL_TOKEN, build_prompt

# sha256 of DETAILED_PROMPT_WITH_SPECIAL_TOKEN in KwaiVGI/VideoAlign prompt_template.py (commit 219ab9d).
REFERENCE_TEMPLATE_SHA256 = "fdb6309bac618dd0c8b1b589d3a0970a974f7856eecbb355a190b2dce54af700"
PROMPTS = ["a red circle moving left", "two dogs {play} in the snow, slow motion"]


def logit_atol(reward, logits: torch.Tensor) -> float:
    """The raw head logits' rounding in another order (see the module docstring), absolute."""
    return network_rtol(*layers(reward.model)) * float(logits.abs().max())


@pytest.fixture(scope="module")
def single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def uint8_videos(batch: int, count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(B, F, 3, H, W) uint8 frames with a hard-edged block (resizes overshoot there)."""
    generator = torch.Generator().manual_seed(seed)
    video = torch.rand(batch, count, 3, height, width, generator=generator)
    video[..., : height // 2, : width // 3] = 1.0
    return (video * 255).round().to(torch.uint8)


# ------------------------------------------------------------------ the reference (inference.py's path)


def reference_fetch_video(video: torch.Tensor, video_fps: float, fps: float, max_pixels: int) -> torch.Tensor:
    """``fetch_video`` with decord's frames: ``smart_nframes`` (fps path, 4 ≤ n ≤ total floored to
    even, rounded to even), ``linspace(...).round()``, ``smart_resize`` in [128·28·28, max_pixels],
    torchvision bicubic antialiased resize of the uint8 frames, ``.float()``."""
    total, _, height, width = video.shape
    count = total / video_fps * fps
    count = min(max(count, math.ceil(4 / 2) * 2), math.floor(min(768, total) / 2) * 2)
    count = min(round(count / 2) * 2, total)
    frames = video[torch.linspace(0, total - 1, count).round().long().tolist()]
    factor, min_pixels = 28, 128 * 28 * 28
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return TF.resize(frames, [h_bar, w_bar], interpolation=InterpolationMode.BICUBIC, antialias=True).float()


class Reference:
    """VideoAlign's ``VideoVLMRewardInference`` on transformers 5: processor from the base with the
    reward tokens added (``create_model_and_processor``), the PEFT model loaded from model.pth."""

    def __init__(self, folder: str) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

        config = json.loads((Path(folder) / "model_config.json").read_text())
        self.data, self.norm = config["data_config"], config["inference_config"]
        base = config["model_config"]["model_name_or_path"]
        self.processor = AutoProcessor.from_pretrained(base, padding_side="right")
        self.processor.tokenizer.add_special_tokens({"additional_special_tokens": REWARD_TOKENS})
        self.special_ids = self.processor.tokenizer.convert_tokens_to_ids(REWARD_TOKENS)
        model = Qwen2VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
        model.rm_head = torch.nn.Linear(model.config.get_text_config().hidden_size, 1, bias=False)
        model.resize_token_embeddings(len(self.processor.tokenizer), mean_resizing=False)
        lora = config["peft_lora_config"]
        targets = [
            n
            for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))
            and not any(e in n for e in lora["lora_namespan_exclude"])
        ]
        model = get_peft_model(
            model,
            LoraConfig(target_modules=targets, r=lora["lora_r"], lora_alpha=lora["lora_alpha"], task_type="CAUSAL_LM"),
        )
        state = torch.load(Path(folder) / f"checkpoint-{STEP}" / "model.pth", weights_only=True)
        renamed = {}
        for key, value in state.items():  # transformers 4.45's Qwen2-VL names → 5's
            key = key.replace("base_model.model.model.", "base_model.model.model.language_model.", 1)
            key = key.replace("base_model.model.visual.", "base_model.model.model.visual.", 1)
            renamed[key] = value
        model.load_state_dict(renamed, strict=True)
        self.model = model.eval().base_model.model

    def batch(self, videos: torch.Tensor, prompts: list[str], video_fps: float) -> dict:
        """``prepare_batch``: the chat data, ``process_vision_info``, the processor."""
        chat_data = [
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "video", "video": "file:///video.mp4", "max_pixels": self.data["max_frame_pixels"]},
                        {
                            "type": "text",
                            "text": build_prompt(p, self.data["eval_dim"], self.data["prompt_template_type"]),
                        },
                    ],
                }
            ]
            for p in prompts
        ]
        video_inputs = [
            reference_fetch_video(v, video_fps, self.data["fps"], self.data["max_frame_pixels"]) for v in videos
        ]
        text = self.processor.apply_chat_template(chat_data, tokenize=False, add_generation_prompt=True)
        return self.processor(
            text=text,
            images=None,
            videos=video_inputs,
            padding=True,
            return_tensors="pt",
            videos_kwargs={"do_rescale": True},
        )

    def logits(self, batch: dict, positions: str = "videoalign") -> torch.Tensor:
        """``Qwen2VLRewardModelBT.forward`` with ``reward_token="special"``, ``output_dim=1``."""
        model, input_ids = self.model, batch["input_ids"]
        inputs_embeds = model.model.language_model.embed_tokens(input_ids)
        pixel_values_videos = batch["pixel_values_videos"].type(model.model.visual.dtype)
        video_embeds = model.model.visual(pixel_values_videos, grid_thw=batch["video_grid_thw"]).pooler_output
        video_mask = (input_ids == model.config.video_token_id).unsqueeze(-1).expand_as(inputs_embeds)
        inputs_embeds = inputs_embeds.masked_scatter(video_mask, video_embeds.to(inputs_embeds.dtype))
        if positions == "videoalign":  # position_ids=None into the 4.45 decoder: 0..L-1 on all three axes
            position_ids = torch.arange(input_ids.shape[1]).view(1, 1, -1).expand(3, input_ids.shape[0], -1)
        else:  # Qwen2-VL's own forward: 3-D positions of the video's patches
            position_ids, _ = model.model.get_rope_index(
                input_ids,
                batch["mm_token_type_ids"],
                video_grid_thw=batch["video_grid_thw"],
                attention_mask=batch["attention_mask"],
            )
        hidden = model.model.language_model(
            inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"], position_ids=position_ids
        ).last_hidden_state
        logits = model.rm_head(hidden)
        special = torch.zeros_like(input_ids, dtype=torch.bool)
        for token in self.special_ids:
            special = special | (input_ids == token)
        return logits[special, ...].view(input_ids.shape[0], 3, -1).view(input_ids.shape[0], -1)

    def rewards(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """``reward``: VQ, MQ, TA, ``_norm``, Overall."""
        out = {
            k: (logits[:, i] - self.norm[f"{k}_mean"]) / self.norm[f"{k}_std"] for i, k in enumerate(("VQ", "MQ", "TA"))
        }
        out["Overall"] = out["VQ"] + out["MQ"] + out["TA"]
        return out


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference(tiny_videoreward())


def build(**options):
    return build_reward("videoalign", model=tiny_videoreward(), dtype="fp32", **options)


# ------------------------------------------------------------------ tests


def test_prompt_template_is_videoaligns_character_for_character() -> None:
    assert hashlib.sha256(DETAILED_PROMPT_WITH_SPECIAL_TOKEN.encode()).hexdigest() == REFERENCE_TEMPLATE_SHA256
    text = build_prompt("a {cat}", ["VQ", "MQ", "TA"], "detailed_special")
    assert "Textual prompt - a {cat}\nPlease provide the ratings of Text Alignment: <|TA_reward|>\nEND\n" in text
    assert [text.index(t) for t in REWARD_TOKENS] == sorted(text.index(t) for t in REWARD_TOKENS)


# (frames, fps, height, width): 13 frames at 8 fps → 4 frames, 90×160 → 252×448 (upscaled to
# 128·28² pixels); 21 at 6 fps → 8 frames, odd 75×133; 15 at 24 fps → 4 frames, 480×848 → 336×588
# (capped at max_frame_pixels).
CASES = [(13, 8.0, 90, 160), (21, 6.0, 75, 133), (15, 24.0, 480, 848)]


@pytest.mark.parametrize("case", CASES)
def test_videoalign_is_inference_py(case, reference: Reference, single_threaded) -> None:
    count, video_fps, height, width = case
    videos = uint8_videos(2, count, height, width, seed=count)
    batch = reference.batch(videos, PROMPTS, video_fps)
    with torch.no_grad():
        logits = reference.logits(batch)
        expected = reference.rewards(logits)
        reward = build(video_fps=video_fps)
        ours = reward.heads(videos.float() / 255, PROMPTS)
        plan = reward.frame_plan(count, height, width, video_fps)
        assert torch.equal(reward.tokenize(PROMPTS, plan["vision_tokens"])["input_ids"], batch["input_ids"])
    # each head is (logit - mean) / std: the logits' rounding over its std; Overall sums the three
    atol = {head: logit_atol(reward, logits) / NORM[f"{head}_std"] for head in ("VQ", "MQ", "TA")}
    atol["Overall"] = sum(atol.values())
    for head, value in expected.items():
        assert_max_abs(ours[head], value, atol[head], f"videoalign {head}, {case}")
    assert set(ours) == {"VQ", "MQ", "TA", "Overall"}


def test_videoaligns_positions_are_not_qwen2_vls(reference: Reference, single_threaded) -> None:
    """VideoAlign's forward never computes Qwen2-VL's 3-D video positions; with them the heads
    move by far more than the tolerance, so the test above tells the two apart."""
    videos = uint8_videos(2, 13, 90, 160, seed=13)
    batch = reference.batch(videos, PROMPTS, 8.0)
    with torch.no_grad():
        sequential, three_d = reference.logits(batch), reference.logits(batch, positions="qwen2-vl")
    assert ((sequential - three_d).abs() > 100 * logit_atol(build(), sequential)).any()


def test_processor_patches_are_transformers_445s(reference: Reference) -> None:
    """The installed processor's video patches equal transformers 4.45.2's
    ``Qwen2VLImageProcessor._preprocess`` (rescale, normalise, reshape/transpose), re-done here."""
    import numpy as np

    video = reference_fetch_video(uint8_videos(1, 13, 75, 133)[0], 8.0, 2.0, 200704)
    batch = reference.processor(
        text=["<|vision_start|><|video_pad|><|vision_end|>"],
        videos=[video],
        return_tensors="pt",
        videos_kwargs={"do_rescale": True},
    )
    mean, std = (
        np.array(reference.processor.video_processor.image_mean),
        np.array(reference.processor.video_processor.image_std),
    )
    patches = (video.numpy().astype(np.float64) * (1 / 255)).astype(np.float32)
    patches = ((patches - mean[:, None, None].astype(np.float32)) / std[:, None, None].astype(np.float32)).astype(
        np.float32
    )
    t, c, h, w = patches.shape
    patches = patches.reshape(t // 2, 2, c, h // 28, 2, 14, w // 28, 2, 14).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = patches.reshape(t // 2 * (h // 14) * (w // 14), c * 2 * 14 * 14)
    # x / 255, - mean, / std: three roundings on each side at the normalised size (sum_atol)
    expected = torch.from_numpy(patches)
    atol = sum_atol(4, float(expected.abs().max()))
    assert_max_abs(batch["pixel_values_videos"], expected, atol, "processor patches against transformers 4.45's")


def test_videoalign_is_differentiable_in_the_frames(single_threaded) -> None:
    """Gradients reach the sampled frames of each video's own score, and no other frame."""
    reward = build(video_fps=8.0)
    frames = (uint8_videos(2, 13, 90, 160, seed=1).float() / 255).requires_grad_(True)
    scores = reward(frames, PROMPTS)
    (grad,) = torch.autograd.grad(scores[0], frames)
    sampled = reward.frame_plan(13, 90, 160, 8.0)["indices"]
    assert sampled == [0, 4, 8, 12] and torch.isfinite(grad).all()
    others = [i for i in range(13) if i not in sampled]
    assert all(grad[0, i].abs().sum() > 0 for i in sampled)
    assert grad[0, others].abs().sum() == 0 and grad[1].abs().sum() == 0


def test_heads_options_and_normalisation(single_threaded) -> None:
    frames = uint8_videos(2, 13, 90, 160, seed=2).float() / 255
    # Every reward here runs the same model forward on the same frames, then the same float ops
    # (the normalisation, VQ + MQ + TA in that order): compared bitwise.
    with torch.no_grad():
        heads = build(video_fps=8.0).heads(frames, PROMPTS)
        raw = build(video_fps=8.0, normalize=False).heads(frames, PROMPTS)
        for head in ("VQ", "MQ", "TA", "Overall"):
            assert torch.equal(build(video_fps=8.0, head=head)(frames, PROMPTS), heads[head]), head
        for head in ("VQ", "MQ", "TA"):
            assert torch.equal(heads[head], (raw[head] - NORM[f"{head}_mean"]) / NORM[f"{head}_std"]), head
        assert torch.equal(raw["Overall"], raw["VQ"] + raw["MQ"] + raw["TA"])
        # The frames' rate per call (rlr-video reward knows it per file) wins over the option.
        assert torch.equal(build(video_fps=4.0).heads(frames, PROMPTS, video_fps=8.0)["VQ"], heads["VQ"])
        mixture = build_reward({"videoalign": {"model": tiny_videoreward(), "dtype": "fp32"}, "flicker": 1.0})
        assert isinstance(mixture, CompositeReward) and mixture.takes_video_fps
        terms = mixture.score_terms(frames, PROMPTS, video_fps=8.0)
        assert torch.equal(terms["videoalign"], heads["Overall"])


def test_frame_sampling_rules() -> None:
    """VideoAlign samples by time from every frame: a caller's --frames must not thin them first."""
    reward = build()
    assert frame_sampling(reward) == "own" and frame_sampling(build_reward("flicker")) == "all"
    assert select_frames(40, 16, "own") == list(range(40)) and select_frames(40, 16, "all") == list(range(40))
    assert select_frames(9, 3, "any") == [0, 4, 8]
    assert reward.frame_plan(3, 90, 160, 8.0)["indices"] == [0, 2]  # fewer than 4 frames: two
    with pytest.raises(ValueError, match="video_fps="):
        reward(uint8_videos(1, 13, 90, 160).float() / 255, PROMPTS[:1])
    with pytest.raises(ValueError, match="needs 2 to 1 frames"):
        reward.frame_plan(1, 90, 160, 8.0)
    dims = reward.model_dims()
    assert dims["text_layers"] == 2 and dims["vision_layers"] == 1 and dims["text_width"] == 32
    sizes = reward.input_sizes(13, 90, 160, 8.0)
    assert sizes["size"] == (252, 448) and sizes["vision_tokens"] == 2 * 18 * 32 // 4
    assert sizes["text_tokens"] == len(reward.tokenize([""], sizes["vision_tokens"])["input_ids"][0]) > 288


def test_layout_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="head must be one of"):
        build(head="overall")
    with pytest.raises(MissingWeightsError, match="hf download KwaiVGI/VideoReward"):
        build_reward("videoalign", model=str(tmp_path / "nowhere"))
    folder = tmp_path / "VideoReward"
    folder.mkdir()
    config = json.loads((Path(tiny_videoreward()) / "model_config.json").read_text())
    (folder / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(MissingWeightsError, match="no checkpoint-<step> folder"):
        build_reward("videoalign", model=str(folder))
    (folder / "checkpoint-5").mkdir()
    with pytest.raises(MissingWeightsError, match="model.pth"):
        build_reward("videoalign", model=str(folder))
    with pytest.raises(MissingWeightsError, match="steps \\[3, 7\\]"):
        build_reward("videoalign", model=tiny_videoreward(), step=4)
    config["model_config"]["model_name_or_path"] = str(tmp_path / "no-base")
    (folder / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(MissingWeightsError, match="base model .*no-base"):
        build_reward("videoalign", model=str(folder))


def test_special_tokens_are_the_checkpoints() -> None:
    reward = build()
    tokenizer = reward.loaded.tokenizer
    assert reward.loaded.reward_ids == tuple(tokenizer.convert_tokens_to_ids(REWARD_TOKENS))
    assert len(tokenizer) == len(set(tokenizer.get_vocab().values()))
    assert all(t in tokenizer.get_vocab() for t in QWEN_SPECIAL)
    assert Path(tiny_base()).is_dir()
