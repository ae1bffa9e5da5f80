"""Library noise (decord's and open_clip's error lines, transformers' "Loading weights" bar)
is absent from a command's output unless ``--verbose``; our own report of a corrupt file stays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from reward_fixtures import smooth_videos, tiny_pickscore

from rewards import build_reward
from rlr_video.backbones import load_backbone
from rlr_video.cli import main
from rlr_video.verbosity import set_verbose
from rlr_video.video_io import write_video


@pytest.fixture
def clips(tmp_path: Path) -> tuple[Path, Path]:
    good, bad = tmp_path / "good.mp4", tmp_path / "bad.mp4"
    write_video(good, smooth_videos(batch=1, frames=4, size=32)[0])
    good.with_suffix(".txt").write_text("a red circle moving left\n")
    bad.write_bytes(os.urandom(3000))  # not a video: decord's C++ prints "ERROR opening"
    yield good, bad
    set_verbose(False)


def test_decord_and_transformers_noise_only_with_verbose(clips, capfd) -> None:
    good, bad = clips
    for flags in ([], ["--verbose"]):
        assert main([*flags, "reward", str(bad), "--reward", "brightness", "--no-progress"]) == 1
        out, err = capfd.readouterr()
        assert f"{bad}: cannot read video" in out  # our report, named, either way
        assert ("ERROR opening" in err) == bool(flags), err
    # a fresh model folder per run: loaded models are cached in the process
    for seed, flags in ((900, []), (901, ["--verbose"])):  # seeds no other test builds
        pickscore = ["--reward", "pickscore", "-O", f"pickscore.model={tiny_pickscore(seed)}"]
        assert main(["reward", str(good), *pickscore, *flags]) == 0
        out, err = capfd.readouterr()
        assert "good.mp4" in out
        assert ("Loading weights" in err) == bool(flags), err


def test_open_clip_root_logger_errors_only_with_verbose(clips, tmp_path) -> None:
    """Missing open_clip weights: our one-line error, and open_clip's ``ERROR:root`` only if asked."""
    good, _ = clips
    # one torch thread, as in-process tests have: two spin-waiting OpenMP threads slow a child
    # process on a busy 2-core machine (test_testbed_evaluate's tools: 2x at load 12)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for flags in ([], ["--verbose"]):
        command = [sys.executable, "-m", "rlr_video", *flags, "reward", str(good), "--reward", "clip"]
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "rlr-video reward: error: open_clip weights" in proc.stderr
        assert ("ERROR:root:" in proc.stderr) == bool(flags), proc.stderr


def test_the_library_hides_its_loading_bars_unless_verbose_and_leaves_the_setting(capfd) -> None:
    """Python API use (and tools/demo_report.py): no "Loading weights" bar from the model loads
    rlr-video makes, transformers' own setting as it was; set_verbose(True) shows the bar."""
    from transformers.utils import logging as hf_logging

    models = [tiny_pickscore(seed) for seed in (902, 903)]  # seeds no other test builds
    hf_logging.enable_progress_bar()  # as a fresh process has it (a CLI test before turns it off)
    try:
        capfd.readouterr()
        load_backbone("tiny-shapes", num_steps=2)  # a transformers text encoder inside
        build_reward("pickscore", model=models[0])
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()
        set_verbose(True)
        build_reward("pickscore", model=models[1])
        assert "Loading weights" in capfd.readouterr().err
    finally:
        set_verbose(False)
