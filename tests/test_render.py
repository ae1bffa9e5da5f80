"""``rlr-video render``: the files exist and decode, the page references exactly them, and its
scores are what ``rlr-video reward`` gives for the same files."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image
from tolerances import assert_rel_close, layers, network_rtol

from rlr_video import cli
from rlr_video.backbones.toy import ToyBackbone
from rlr_video.chain import rollout
from rlr_video.config import load_config
from rlr_video.render import gallery_html, ground_truth, sample_videos
from rlr_video.testbed.shapes import COLOURS, make_batch
from rlr_video.train.trainer import Trainer
from rlr_video.video_io import read_video

PROMPTS = [
    {"prompt": "a red circle moving left"},
    {"coarse": "a shape", "mid": "a blue shape moving up", "fine": "a blue triangle moving up"},
]
FINAL = ["a red circle moving left", "a blue triangle moving up"]

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py


def test_render_gallery(tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(load_config("toy", [f"train.output_dir={run}", "train.steps=2", "train.progress=false"])).train()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = tmp_path / "gallery"
    lora = run / "checkpoints" / "step-000002"
    argv = ["render", "toy", "--prompts", str(prompts), "--lora", str(lora), "--out", str(out), "--no-progress"]
    # held-out rewards (train.eval) are scored too: the guard against a fine-tune that fools its reward
    argv.append("train.eval={reward: {redness: 1.0, brightness: 0.5}, items: [a red circle]}")
    assert cli.main(argv) == 0

    labels = ["base", "step-000002"]
    videos = [f"videos/{i:03d}-{label}.{ext}" for i in range(2) for label in labels for ext in ("mp4", "gif")]
    captions = [f"videos/{i:03d}-{label}.txt" for i in range(2) for label in labels]
    expected = {*videos, "contact/000.png", "contact/001.png", "scores.json"}
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"index.html"}
    assert written == expected | set(captions)
    # each video's sidecar caption, the fine part of a multi-scale prompt, as `rlr-video reward` reads it
    assert [(out / c).read_text() for c in captions] == [f"{FINAL[i]}\n" for i in range(2) for _ in labels]

    for name in videos:  # every video decodes back to the sampled shape: 4 frames of 8x8
        assert tuple(read_video(out / name).shape) == (4, 3, 8, 8), name
    for name in ("contact/000.png", "contact/001.png"):
        with Image.open(out / name) as image:
            image.verify()

    page = (out / "index.html").read_text()
    assert set(re.findall(r'(?:src|href)="([^"]+)"', page)) == expected

    scores = json.loads((out / "scores.json").read_text())
    held = ["held-out redness", "held-out brightness", "held-out total"]
    for name, row in scores.items():
        assert set(row) == {"color_match", *held}, name
        assert all(f"{row[k]:.4f}" in page for k in ("color_match", *held)), name
        assert f"<td>{held[0]}</td>" in page
    # Columns are labelled base and fine-tuned; the summary holds each column's mean reward and,
    # the prompts being testbed captions, the analytic ground truth (per clip and per column).
    assert page.count("<b>base model</b>") == 2 and page.count("<b>fine-tuned: step-000002</b>") == 2
    for label in labels:
        mean = sum(scores[f"{i:03d}-{label}.mp4"]["color_match"] for i in range(2)) / 2
        assert f"{mean:.4f}</td>" in page, label
    assert "<th>ground truth: all</th>" in page
    assert len(re.findall(r"<td>colour [✓✗] shape [✓✗] direction [✓✗]</td>", page)) == 4
    # The same files scored by `rlr-video reward` (which sees the fine part of a multi-scale prompt).
    table = tmp_path / "prompts-by-file.jsonl"
    table.write_text(
        "".join(
            json.dumps({"path": str(out / "videos" / f"{i:03d}-{label}.mp4"), "prompt": FINAL[i]}) + "\n"
            for i in range(2)
            for label in labels
        )
    )
    result = tmp_path / "reward.json"
    mp4s = [str(out / v) for v in videos if v.endswith(".mp4")]
    reward_argv = ["reward", *mp4s, "--reward", "color_match", "--reward", "redness=1,brightness=0.5"]
    assert cli.main([*reward_argv, "--prompts", str(table), "--out", str(result), "--no-progress"]) == 0
    capsys.readouterr()
    by_file = {row["path"].rsplit("/", 1)[-1]: row["scores"] for row in json.loads(result.read_text())["videos"]}
    renamed = {"redness": held[0], "brightness": held[1], "1*redness+0.5*brightness": held[2]}
    assert {f: {renamed.get(k, k): v for k, v in row.items()} for f, row in by_file.items()} == scores


def test_bad_arguments_fail_before_anything_is_written(tmp_path, capsys):
    foreign = tmp_path / "not-a-lora"
    foreign.mkdir()
    out = tmp_path / "gallery"
    assert cli.main(["render", "toy", "--lora", str(foreign), "--out", str(out), "--no-progress"]) == 2
    assert "not-a-lora holds no trainable_parameters.safetensors" in capsys.readouterr().err
    other = tmp_path / "other"  # a run of a narrower toy model: the same names, other shapes
    Trainer(load_config("toy", [f"train.output_dir={other}", "train.steps=1", "model.toy.hidden=4"])).train()
    assert cli.main(["render", "toy", "--lora", str(other / "checkpoints" / "step-000001"), "--out", str(out)]) == 2
    assert "saved from another model or LoRA rank" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        cli.main(["render", "toy", "--limit", "0", "--out", str(out)])
    assert "--limit: '0': expected an integer >= 1" in capsys.readouterr().err


def test_ground_truth_is_the_testbed_scorer_on_testbed_captions_only():
    batch = make_batch(2, seed=0)
    colour = batch.specs[1].colour
    wrong = batch.captions[1].replace(colour, next(c for c in COLOURS if c != colour))
    truth = ground_truth(list(batch.videos), [batch.captions[0], wrong])
    assert truth[0] == {"colour": 1.0, "shape": 1.0, "direction": 1.0, "all": 1.0}
    assert truth[1]["colour"] == 0.0 and truth[1]["all"] == 0.0
    assert ground_truth(list(batch.videos), ["a cat playing the piano", batch.captions[1]]) is None
    page = gallery_html(["a cat playing the piano"], ["base"], {"000-base.mp4": {"clip": 0.5}})
    assert "ground truth" not in page and "<b>base model</b>" in page


def test_every_video_depends_on_its_seed_only():
    toy = ToyBackbone.create(num_steps=6, latent_shape=(2, 3, 4, 4))
    prompts, seeds = ["a red circle", "a blue square"], [11, 12]
    batch = sample_videos(toy, prompts, seeds)
    alone = sample_videos(toy, prompts[1:], seeds[1:])
    # a batch of two against one: the denoiser may sum in another order (num_steps calls deep)
    depth, fan_in = layers(toy.denoiser)
    rtol = network_rtol(toy.num_steps * depth + 1, max(fan_in, toy.latent_shape[0]))  # + the linear decoder
    assert_rel_close(batch[1:], alone, rtol, "the second video sampled in a batch and alone")
    with torch.no_grad():  # one video both ways: the same steps and decode, in the same order
        traj = rollout(toy, toy.encode(prompts[1:]), torch.Generator().manual_seed(12), 1)
        assert torch.equal(alone, toy.decode(traj.sample).clamp(0, 1))
