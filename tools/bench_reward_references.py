"""How far each zoo reward is from its reference: the reference re-implementations of
``tests/test_rewards_references.py`` against ``build_reward(...)`` on the same tiny random-weight
models (real checkpoint formats), 8-bit frames with hard edges, at several frame sizes.

    python tools/bench_reward_references.py

prints, per reward and frame size (width×height), the largest gap over the videos, relative to
the largest reference score, and the absolute gap. Rewards come from the ``rewards`` package on
``sys.path`` (this checkout by default; put another checkout first on ``PYTHONPATH`` to measure
it: the references and fixtures are always this checkout's).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import rewards.stats  # noqa: E402

if not hasattr(rewards.stats, "reference_mean"):  # an older checkout: plain means only
    rewards.stats.reference_mean = None  # type: ignore[attr-defined]

import open_clip  # noqa: E402
import reward_fixtures as fx  # noqa: E402
import test_rewards_references as ref  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rewards import build_reward  # noqa: E402

SIZES = [(320, 576), (480, 848), (61, 90), (300, 200), (224, 224)]


def gap(ours, expected) -> tuple[float, float]:
    ours = torch.as_tensor(ours, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    absolute = float((ours - expected).abs().max())
    return absolute / float(expected.abs().max()), absolute


def rows() -> list[tuple[str, tuple[int, int], float, float]]:
    out = []
    folder = fx.tiny_pickscore(size="224")
    for size in SIZES:
        frames = fx.hard_edged_videos(2, 2, *size, seed=1)
        for backend in ("torchvision", "pil"):
            with torch.enable_grad():
                expected, _, _ = ref.pickscore_reference(folder, frames, ref.PROMPTS, backend)
            ours = build_reward("pickscore", model=folder)(frames, ref.PROMPTS)
            out.append((f"pickscore ({backend} processor)", size, *gap(ours, expected.detach())))
    weights = fx.open_clip_weights(fx.TINY_224, seed=6)
    for size in SIZES:
        frames = fx.hard_edged_videos(2, 3, *size, seed=2)
        with torch.enable_grad():
            expected, _, _ = ref.clipscore_reference(frames, ref.PROMPTS, weights)
        ours = build_reward("clip", model=fx.TINY_224, pretrained=weights, scale=2.5)(frames, ref.PROMPTS)
        out.append(("clip scale=2.5 vs CLIPScore", size, *gap(ours, expected.detach())))
    weights, head = fx.open_clip_weights(fx.TINY_224_768, seed=4), fx.aesthetic_head("mlp", seed=1, unit=True)
    for size in SIZES:
        frames = fx.hard_edged_videos(2, 2, *size, seed=3)
        with torch.enable_grad():
            expected, _ = ref.aesthetic_reference(frames, weights, head)
        ours = build_reward("aesthetic", model=fx.TINY_224_768, pretrained=weights, head=head)(frames, ["", ""])
        out.append(("aesthetic", size, *gap(ours, expected.detach())))
    weights = fx.open_clip_weights(fx.TINY_224, seed=5, wrap=True)
    model = open_clip.create_model(fx.TINY_224, pretrained=weights).eval()
    for size in SIZES[:4]:  # HPSv2's transform skips the pad when the long side is already 224
        frames = fx.hard_edged_videos(2, 2, *size, seed=4)
        image = F.normalize(model.encode_image(ref.hpsv2_pixels(frames)), dim=-1)
        text = F.normalize(model.encode_text(open_clip.get_tokenizer(fx.TINY_224)(ref.PROMPTS)), dim=-1)
        expected = (image.view(2, 2, -1) * text[:, None]).sum(-1).mean(dim=1)
        ours = build_reward("hpsv2", model=fx.TINY_224, pretrained=weights)(frames, ref.PROMPTS)
        out.append(("hpsv2", size, *gap(ours, expected)))
    for name, options, reference, seeds in (
        ("temporal dino", {"model": fx.dino_hf_folder()}, ref.subject_consistency_reference, (5, 6)),
        (
            "temporal clip",
            {"backbone": "clip", "model": fx.TINY_224, "pretrained": fx.open_clip_weights(fx.TINY_224, seed=6)},
            ref.background_consistency_reference,
            (8, 9),
        ),
    ):
        source = fx.dino_checkpoint() if "dino" in name else options["pretrained"]
        for size in SIZES:
            videos = [fx.hard_edged_videos(1, count, *size, seed=seed)[0] for count, seed in zip((4, 2), seeds)]
            expected, overall = reference(videos, source)
            reward = build_reward("temporal", **options)
            ours = [float(reward(v[None], [""])) for v in videos]
            out.append((name, size, *gap(ours, expected)))
            out.append((f"{name}, 2 videos, plain mean", size, *gap([sum(ours) / 2], [overall])))
            if rewards.stats.reference_mean is not None:
                summary = rewards.stats.reference_mean(reward, ours, [len(v) for v in videos])
                out.append((f"{name}, 2 videos, reference_mean", size, *gap([summary], [overall])))
    for size in SIZES[:3]:
        videos = [fx.hard_edged_videos(1, 5, *size, seed=10)[0], fx.hard_edged_videos(1, 3, *size, seed=11)[0]]
        expected = [ref.temporal_flickering_reference(v) for v in videos]
        reward = build_reward("flicker")
        out.append(("flicker", size, *gap([float(reward(v[None], [""])) for v in videos], expected)))
    return out


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    fx.register_tiny_open_clip()
    with torch.no_grad():
        table = rows()
    print(f"{'reward':42s} {'frames':>8s} {'relative':>9s} {'absolute':>9s}")
    for name, (height, width), relative, absolute in table:
        print(f"{name:42s} {f'{width}x{height}':>8s} {relative:9.1e} {absolute:9.1e}")


if __name__ == "__main__":
    main()
