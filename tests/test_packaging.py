"""A wheel (``pip install`` without ``-e``) ships the presets and their prompt lists, and a
preset copied out of the package keeps working prompt paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from rlr_video.config import PRESET_DIR, load_config
from rlr_video.prompts import config_prompts

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_presets_and_prompt_lists(tmp_path):
    source = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("rlr_video", "rewards"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("rlr_video-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    files = [p.relative_to(PRESET_DIR).as_posix() for p in PRESET_DIR.rglob("*") if p.is_file()]
    shipped = {f"rlr_video/configs/{name}" for name in files}
    assert {"rlr_video/configs/tiny-shapes.yaml", "rlr_video/configs/prompts/shapes-heldout.txt"} <= shipped
    assert shipped <= names
    # and the presets' hub models' config files, which `rlr-video plan` reads without the hub
    configs = ROOT / "rlr_video" / "assets" / "hub-configs"
    assert {f"rlr_video/{p.relative_to(ROOT / 'rlr_video').as_posix()}" for p in configs.rglob("*.json")} <= names

    # Installed from the wheel alone (unpacked, outside the checkout), the presets load by name.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "from rlr_video.config import PRESET_DIR, load_config, resolve_config_path\n"
        "from rlr_video.prompts import config_prompts\n"
        f"assert str(resolve_config_path('tiny-shapes')).startswith({str(site)!r}), PRESET_DIR\n"
        "assert len(config_prompts(load_config('tiny-shapes').prompts)) > 10\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env, timeout=300)


def test_a_copied_preset_keeps_its_prompt_lists(tmp_path, monkeypatch):
    copy = tmp_path / "mine.yaml"
    shutil.copy(PRESET_DIR / "tiny-shapes.yaml", copy)
    monkeypatch.chdir(tmp_path)
    shipped = config_prompts(load_config("tiny-shapes").prompts)
    assert config_prompts(load_config(copy).prompts) == shipped
    assert config_prompts(load_config("mine.yaml").prompts) == shipped
    # A prompt file next to the copy wins over the shipped one of the same name.
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "shapes-heldout.txt").write_text("a red circle moving left\n")
    assert config_prompts(load_config(copy).prompts) == ["a red circle moving left"]
