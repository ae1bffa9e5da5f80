"""``rlr-video reward`` on real mp4/webm/gif/mkv files written with PyAV and Pillow."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from reward_fixtures import TINY, open_clip_weights, register_tiny_open_clip, smooth_videos
from tolerances import EPS, EPS64, blocked_sum_atol, sum_atol

from rewards import build_reward
from rlr_video.cli import main
from rlr_video.video_io import read_video, write_gif, write_video

# Sorted file-name order, the order a prompts .txt file follows.
NAMES = ["a.mp4", "b.webm", "c.gif", "gray.mkv", "odd.mp4", "one.mp4", "truncated.mp4"]
GOOD = NAMES[:-1]


def write_gray(path: Path, frames: int = 5) -> None:
    """A real single-channel video (ffv1 keeps the 'gray' pixel format)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 40, 40, "gray"
        for i in range(frames):
            image = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (40, 1)) // (i + 1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="gray")))
        container.mux(stream.encode())


def write_odd(path: Path, frames: int = 5) -> None:
    """An odd-sized H.264 file (yuv444p allows odd sizes; write_video would pad to even)."""
    video = (smooth_videos(batch=1, frames=frames, size=41)[0][..., :37] * 255).round().byte()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 37, 41, "yuv444p"
        for image in video.permute(0, 2, 3, 1).numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    clips = smooth_videos(batch=3, frames=6, size=40)
    write_video(folder / "a.mp4", clips[0])
    write_video(folder / "b.webm", clips[1])
    write_gif(folder / "c.gif", clips[2])
    write_gray(folder / "gray.mkv")
    write_odd(folder / "odd.mp4")
    write_video(folder / "one.mp4", clips[0][:1])
    whole = (folder / "a.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (folder / "prompts.txt").write_text("\n".join(f"prompt for {name}" for name in NAMES) + "\n")
    return folder


@pytest.fixture(scope="module")
def clip_options() -> list[str]:
    register_tiny_open_clip()
    return ["-O", f"clip.model={TINY}", "-O", f"clip.pretrained={open_clip_weights()}"]


def run_cli(*args: str | Path) -> int:
    return main(["reward", *map(str, args), "--no-progress"])


def test_json_output_scores_every_readable_file(videos: Path, clip_options, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    rc = run_cli(
        videos, "--reward", "flicker", "--reward", "clip", *clip_options, "--prompts", videos / "prompts.txt",
        "--out", out,
    )  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["rewards"] == ["flicker", "clip"]
    by_name = {Path(v["path"]).name: v for v in data["videos"]}
    assert sorted(by_name) == GOOD
    for name, video in by_name.items():
        assert video["prompt"] == f"prompt for {name}"  # matched by sorted file name
        assert all(math.isfinite(video["scores"][r]) for r in ("flicker", "clip"))
    assert by_name["one.mp4"]["frames"] == 1 and by_name["one.mp4"]["scores"]["flicker"] == 1.0
    assert by_name["a.mp4"]["frames"] == 6 and by_name["gray.mkv"]["frames"] == 5
    [failed] = data["failed"]
    assert Path(failed["path"]).name == "truncated.mp4" and "cannot read video" in failed["error"]
    flicker = [v["scores"]["flicker"] for v in data["videos"]]
    summary = data["summary"]["flicker"]
    # The same 6 scores (JSON round-trips floats exactly) summed in float64 by fsum and by numpy:
    # the means within sum_atol(6 terms and a division) at float64 eps; the std and the CI's
    # half-width (high - low, 2 x the mean apart) round at the scores' size, so relative to the
    # std that is max|x| / std times more. A wrong score moves them by >= 1e-3.
    scale = float(np.max(np.abs(flicker)))
    assert summary["n"] == 6 and summary["mean"] == pytest.approx(np.mean(flicker), abs=sum_atol(7, scale, EPS64))
    conditioned = sum_atol(9, scale / summary["std"], EPS64)
    assert summary["std"] == pytest.approx(np.std(flicker, ddof=1), rel=conditioned)
    low, high = summary["ci95"]
    half_width = 2.571 * summary["std"] / 6**0.5
    assert low < summary["mean"] < high and (high - low) / 2 == pytest.approx(half_width, rel=conditioned)
    printed = capsys.readouterr().out
    assert "1 of 7 files failed" in printed and "truncated.mp4" in printed and "95% CI" in printed


def test_csv_output_with_csv_prompts_and_composite(videos: Path, clip_options, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.csv"
    with prompts.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "prompt"])
        writer.writerow([str(videos / "a.mp4"), "absolute path"])
        writer.writerow(["b.webm", "matched by file name"])
    out = tmp_path / "results.csv"
    rc = run_cli(
        videos / "a.mp4", videos / "b.webm", "--reward", "flicker=1,clip=0.5", *clip_options, "--prompts", prompts,
        "--frames", "3", "--out", out,
    )  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["kind"] for r in rows] == ["video", "video", "n", "mean", "std", "ci95_low", "ci95_high"]
    videos_rows = rows[:2]
    assert [r["prompt"] for r in videos_rows] == ["absolute path", "matched by file name"]
    assert all(r["frames"] == "6" for r in videos_rows)  # the file's; flicker's mixture reads them all
    for r in videos_rows:
        total, flicker, clip = float(r["1*flicker+0.5*clip"]), float(r["flicker"]), float(r["clip"])
        # the composite adds the weighted terms in float32, this sum is float64: one rounding
        assert total == pytest.approx(flicker + 0.5 * clip, abs=sum_atol(2, abs(flicker) + 0.5 * abs(clip)))
    stats = {r["kind"]: r for r in rows[2:]}
    assert stats["n"]["flicker"] == "2"
    clips = [float(r["clip"]) for r in videos_rows]  # float64 means of the same 2 numbers
    assert float(stats["mean"]["clip"]) == pytest.approx(np.mean(clips), abs=sum_atol(3, max(map(abs, clips)), EPS64))


def test_jsonl_prompts_fall_back_to_sidecars(videos: Path, clip_options, tmp_path: Path) -> None:
    for name in ("a.mp4", "c.gif"):
        (tmp_path / name).write_bytes((videos / name).read_bytes())
    (tmp_path / "b.webm").write_bytes((videos / "b.webm").read_bytes())
    (tmp_path / "c.txt").write_text("from the sidecar\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"video": "a.mp4", "caption": "from the jsonl"}) + "\n")
    out = tmp_path / "results.json"
    assert run_cli(tmp_path, "--reward", "clip", *clip_options, "--prompts", prompts, "--out", out) == 0
    data = json.loads(out.read_text())
    assert {Path(v["path"]).name: v["prompt"] for v in data["videos"]} == {
        "a.mp4": "from the jsonl",
        "c.gif": "from the sidecar",
    }
    [failed] = data["failed"]
    assert Path(failed["path"]).name == "b.webm" and "no prompt" in failed["error"]


def test_prompt_free_rewards_need_no_prompts_and_batching_does_not_change_scores(videos: Path, tmp_path) -> None:
    results = []
    for batch in ("1", "3"):
        out = tmp_path / f"b{batch}.json"
        assert run_cli(videos, "--reward", "flicker", "--batch-size", batch, "--out", out) == 0
        results.append({v["path"]: v["scores"]["flicker"] for v in json.loads(out.read_text())["videos"]})
    assert results[0].keys() == results[1].keys() and len(results[0]) == 6
    for path, score in results[0].items():
        # 1 - the mean |difference| of <= 5 pairs of 3 x 41 x 40 pixels, summed in another order
        # in a batch of 3 perhaps: sum_atol of those terms (their mean is 1 - score), and the
        # subtraction from 1. Another video's frames would move it by more than 1e-2.
        atol = sum_atol(5 * 3 * 41 * 40, 1 - score) + EPS
        assert results[1][path] == pytest.approx(score, abs=atol)


def test_exit_codes(videos: Path, tmp_path: Path, capsys) -> None:
    assert run_cli(videos / "truncated.mp4", "--reward", "flicker") == 1  # every file failed
    assert run_cli(videos / "a.mp4", videos / "truncated.mp4", "--reward", "flicker") == 0
    assert run_cli(videos / "a.mp4", videos / "truncated.mp4", "--reward", "flicker", "--strict") == 1
    capsys.readouterr()
    (tmp_path / "spec.yaml").write_text("flicker: 1\nclip: [1\n")
    usage_errors = [
        ([tmp_path / "empty*.mp4", "--reward", "flicker"], f"no videos found in '{tmp_path / 'empty*.mp4'}'"),
        ([videos / "a.mp4", "--reward", "flicker", "--device", "cuda:99"], "--device 'cuda:99': torch sees"),
        ([videos / "a.mp4"], "at least one reward"),
        ([videos / "a.mp4", "--reward", "flickr"], "Did you mean 'flicker'"),
        ([videos / "a.mp4", "--reward", "flicker", "-O", "flicker.chunk=2"], "no option 'chunk'"),
        ([videos / "a.mp4", "--reward", "flicker", "-O", "clip.model=x"], "no --reward names 'clip'"),
        ([videos, "--reward", "clip", "--prompts", videos / "missing.txt"], "no such file"),
        ([videos / "a.mp4", videos / "nope.mp4", "-r", "flicker"], f"no such file or folder: '{videos}/nope.mp4'"),
        ([videos / "a.mp4", "--reward", tmp_path / "spec.yaml"], f"--reward {tmp_path / 'spec.yaml'}:2: invalid YAML"),
        ([videos / "a.mp4", videos / "b.webm", "--reward", "clip", "--prompts", videos / "prompts.txt"], "7 prompts"),
        ([videos / "a.mp4", "--reward", "flicker", "--out", tmp_path / "x.xml"], ".json or .csv"),
        ([videos / "a.mp4", "--reward", "{bad json"], "invalid JSON"),
        ([videos / "a.mp4", "--reward", "flicker", "--import", "no_such_module_here"], "--import no_such_module_here"),
    ]
    for args, message in usage_errors:
        assert run_cli(*args) == 2, message
        err = capsys.readouterr()
        assert message in err.err and err.err.count("\n") == 1 and not err.out  # one line, no results table


def test_an_empty_file_is_reported_as_empty(videos: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    out = tmp_path / "r.json"
    assert run_cli(videos / "a.mp4", empty, "--reward", "flicker", "--out", out) == 0
    line = f"  {empty}: cannot read video: empty file (0 bytes)\n"  # named once, no decoder's words
    assert line in capsys.readouterr().out
    [failed] = json.loads(out.read_text())["failed"]
    assert failed == {"path": str(empty), "error": "cannot read video: empty file (0 bytes)"}


def test_one_file_per_clip_unless_all_formats(tmp_path: Path, capsys) -> None:
    """A render writes NAME.mp4 and NAME.gif of each clip: scored once, from the mp4."""
    clips = smooth_videos(batch=3, frames=6, size=40)
    for name, clip in zip("abc", clips):
        write_gif(tmp_path / f"{name}.gif", clip)
    write_video(tmp_path / "a.mp4", clips[0])
    write_video(tmp_path / "c.webm", clips[2])
    out = tmp_path / "scores.json"

    def scored(*flags: str) -> dict[str, float]:
        assert run_cli(tmp_path, "--reward", "brightness", "--out", out, *flags) == 0
        return {Path(v["path"]).name: v["scores"]["brightness"] for v in json.loads(out.read_text())["videos"]}

    assert set(scored()) == {"a.mp4", "b.gif", "c.webm"}
    assert "2 files skipped: the same clip in another format (--all-formats" in capsys.readouterr().err
    both = scored("--all-formats")
    assert set(both) == {"a.gif", "a.mp4", "b.gif", "c.gif", "c.webm"}
    assert both["a.gif"] != both["a.mp4"]  # 256-colour palette vs yuv420: not the same pixels


def test_json_spec_with_per_reward_options_and_fps(videos: Path, tmp_path: Path, capsys) -> None:
    spec = json.dumps({"brightness": {"weight": 2.0}, "dim": {"reward": "brightness", "weight": -1}})
    out = tmp_path / "r.json"
    assert run_cli(videos / "a.mp4", "--reward", spec, "--reward", "flicker", "--fps", "4", "--out", out) == 0
    [video] = json.loads(out.read_text())["videos"]
    assert video["frames"] == 6  # the file's frame count
    scores = video["scores"]
    # float32 weighted sum of two terms against float64: one rounding
    atol = sum_atol(2, 2 * abs(scores["brightness"]) + abs(scores["dim"]))
    assert scores["2*brightness+-1*dim"] == pytest.approx(2 * scores["brightness"] - scores["dim"], abs=atol)
    frames = read_video(videos / "a.mp4")[None]
    # 6 frames at 8 fps resampled to 4 fps: frames 0, 2, 4 for a frame mean; flicker reads all six.
    # The same float32 pixels averaged in another order: a sum of that many terms of at most 1.
    picked = frames[:, [0, 2, 4]]
    assert scores["brightness"] == pytest.approx(float(picked.mean()), abs=sum_atol(picked.numel(), 1.0))
    flicker = float(build_reward("flicker")(frames, [""]))
    assert scores["flicker"] == pytest.approx(flicker, abs=sum_atol(frames.numel(), 1.0))
    assert "--frames/--fps do not apply to flicker" in capsys.readouterr().err


def test_list_and_import_custom_rewards(tmp_path: Path, videos: Path, reward_module, capsys) -> None:
    reward_module(
        "my_rewards",
        "from rewards import register_reward\n\n"
        "@register_reward('luma', needs_prompts=False)\n"
        "def luma(frames, prompts, gain=1.0):\n"
        "    return gain * frames.mean(dim=(1, 2, 3, 4))\n",
    )
    assert main(["reward", "--import", "my_rewards", "--list-rewards"]) == 0
    assert "luma" in capsys.readouterr().out.split()
    # options before and after the videos: leftover words go back to the positional list
    out = tmp_path / "r.json"
    rc = run_cli(videos / "a.mp4", "--import", "my_rewards", "-r", "luma", "-O", "luma.gain=2", videos / "b.webm",
                 "--out", out)  # fmt: skip
    assert rc == 0
    scored = json.loads(out.read_text())["videos"]
    assert [Path(v["path"]).name for v in scored] == ["a.mp4", "b.webm"]
    assert all(0 < v["scores"]["luma"] < 2 for v in scored)


def test_console_entry_point_from_another_directory(videos: Path, tmp_path: Path) -> None:
    """The real process: ``python -m rlr_video reward`` with a folder argument, run elsewhere."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # one thread, as in-process
    proc = subprocess.run(
        [sys.executable, "-m", "rlr_video", "reward", str(videos), "--reward", "flicker", "--out", "out.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert len(data["videos"]) == 6 and len(data["failed"]) == 1
    assert "flicker" in proc.stdout


def test_each_reward_gets_the_frames_its_reference_reads(tmp_path: Path, capsys) -> None:
    """--frames thins the frames of a frame mean only: flicker on a 9-frame file with --frames 3
    still compares neighbouring frames (not frames 0, 4 and 8)."""
    path = write_video(tmp_path / "nine.mp4", smooth_videos(batch=1, frames=9, size=32)[0], fps=8)
    out = tmp_path / "r.json"
    assert run_cli(path, "--reward", "flicker", "--reward", "brightness", "--frames", "3", "--out", out) == 0
    [video] = json.loads(out.read_text())["videos"]
    frames = read_video(path)[None]
    flicker = build_reward("flicker")
    # 1 - a mean of |differences| <= 1 (torch's blocked float32 sum, blocked_sum_atol), if the CLI
    # sums them otherwise; frames 0, 4 and 8 are further apart than that
    atol = blocked_sum_atol(frames[0, 1:].numel(), 1.0) + EPS
    assert video["scores"]["flicker"] == pytest.approx(float(flicker(frames, [""])), abs=atol)
    assert video["scores"]["flicker"] != pytest.approx(float(flicker(frames[:, [0, 4, 8]], [""])), abs=atol)
    picked = frames[:, [0, 4, 8]]  # a mean of pixels <= 1, reduced over other dims
    assert video["scores"]["brightness"] == pytest.approx(
        float(picked.mean()), abs=blocked_sum_atol(picked.numel(), 1.0)
    )
    err = capsys.readouterr().err
    assert "--frames/--fps do not apply to flicker: its reference compares neighbouring frames" in err
    assert "brightness" not in err


def test_rewards_that_take_the_frame_rate_get_the_files(tmp_path: Path, reward_module) -> None:
    """A reward with ``takes_video_fps`` is called with each file's own rate (it samples by time);
    files of different rates are never batched together."""
    reward_module(
        "rate_rewards",
        "import torch\n"
        "from rewards import register_reward\n\n"
        "@register_reward('rate', needs_prompts=False)\n"
        "class Rate:\n"
        "    frame_sampling = 'own'\n"
        "    takes_video_fps = True\n"
        "    def __call__(self, frames, prompts, video_fps=None):\n"
        "        return torch.full((len(frames),), float(video_fps) * 1000 + frames.shape[1])\n",
    )
    clip = smooth_videos(batch=1, frames=5, size=16)[0]
    write_video(tmp_path / "a.mp4", clip, fps=6)
    write_video(tmp_path / "b.mp4", clip, fps=24)
    write_gif(tmp_path / "c.gif", clip, fps=4)
    out = tmp_path / "r.json"
    argv = [tmp_path, "--import", "rate_rewards", "-r", "rate", "--frames", "2", "--batch-size", "3", "--out", out]
    assert run_cli(*argv) == 0
    scores = {Path(v["path"]).name: v["scores"]["rate"] for v in json.loads(out.read_text())["videos"]}
    assert scores == {"a.mp4": 6005.0, "b.mp4": 24005.0, "c.gif": 4005.0}  # every frame, each file's rate


@pytest.fixture(scope="module")
def videoalign_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videoalign")
    generator = np.random.default_rng(0)
    for name, fps in (("a.mp4", 8), ("b.mp4", 6)):
        frames = generator.integers(0, 256, size=(13, 3, 90, 160)).astype(np.float32) / 255
        write_video(folder / name, torch.from_numpy(frames), fps=fps)
        (folder / name).with_suffix(".txt").write_text(f"a red circle moving left, {name}\n")
    return folder


def test_videoalign_prints_its_heads_at_each_files_frame_rate(videoalign_files: Path, tmp_path: Path, capsys) -> None:
    from videoalign_fixtures import tiny_videoreward

    from rlr_video.video_io import decode_video

    model = tiny_videoreward()
    out = tmp_path / "r.json"
    options = ["-O", f"videoalign.model={model}", "-O", "videoalign.dtype=fp32"]
    assert run_cli(videoalign_files, "--reward", "videoalign", *options, "--frames", "4", "--out", out) == 0
    data = json.loads(out.read_text())
    heads = ["videoalign.VQ", "videoalign.MQ", "videoalign.TA", "videoalign.Overall"]
    assert data["rewards"] == [*heads, "videoalign"]
    reward = build_reward("videoalign", model=model, dtype="fp32")
    for video in data["videos"]:
        frames, rate = decode_video(video["path"])
        with torch.no_grad():
            expected = reward.heads(frames[None], [video["prompt"]], video_fps=rate)
        for head in ("VQ", "MQ", "TA", "Overall"):
            # the same computation on the same frames (each file alone in its batch: its own rate)
            assert video["scores"][f"videoalign.{head}"] == float(expected[head])
        assert video["scores"]["videoalign"] == video["scores"]["videoalign.Overall"]
    printed = capsys.readouterr()
    assert "videoalign.VQ" in printed.out and "--frames/--fps do not apply to videoalign" in printed.err


def test_the_summary_is_each_references_mean_over_videos(tmp_path: Path) -> None:
    """VBench's consistency weights each video by its F − 1 frame pairs; a composite's total is the
    plain mean of the per-video totals (what training raises)."""
    from reward_fixtures import dino_checkpoint

    from rewards.stats import t_quantile_975

    for name, count in (("a.mp4", 2), ("b.mp4", 4), ("c.mp4", 7)):
        write_video(tmp_path / name, smooth_videos(batch=1, frames=count, size=32, seed=count)[0])
    spec = json.dumps({"tc": {"reward": "temporal", "model": dino_checkpoint()}, "brightness": 1.0})
    out = tmp_path / "r.json"
    assert run_cli(tmp_path, "--reward", spec, "--out", out) == 0
    data = json.loads(out.read_text())
    scores = {v["frames"]: v["scores"] for v in data["videos"]}
    weights = {2: 1, 4: 3, 7: 6}  # F - 1
    weighted = sum(weights[f] * s["tc"] for f, s in scores.items()) / 10
    plain = sum(s["tc"] for s in scores.values()) / 3
    summary = data["summary"]
    # float64 means of 3 values, math.fsum's against a running sum or numpy's: a few roundings at
    # the values' size (sum_atol at float64 eps); the std's, conditioned by max|x| / std
    largest = max(abs(s["tc"]) for s in scores.values())
    atol = sum_atol(6, largest, EPS64)
    assert summary["tc"]["mean"] == pytest.approx(weighted, abs=atol) and abs(weighted - plain) > 1e-6
    std = float(np.std([s["tc"] for s in scores.values()], ddof=1))
    half = t_quantile_975(2) * std * math.sqrt(1 + 9 + 36) / 10  # t · s · sqrt(sum w^2) / sum w
    atol += half * sum_atol(10, largest / std, EPS64)
    assert summary["tc"]["ci95"] == pytest.approx([weighted - half, weighted + half], abs=atol)
    for column in ("1*tc+1*brightness", "brightness"):
        values = [s[column] for s in scores.values()]
        atol = sum_atol(5, max(map(abs, values)), EPS64)
        assert summary[column]["mean"] == pytest.approx(np.mean(values), abs=atol), column
