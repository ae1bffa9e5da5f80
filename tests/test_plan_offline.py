"""``rlr-video plan`` without the hub: the shipped presets' models plan from the config files
that ship with the package (``rlr_video/assets/hub-configs``); a cache hit still wins, a user's
own hub id still needs the cache, and training never takes the shipped configs for a model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from backbone_fixtures import build_tiny_wan
from huggingface_hub import constants

from rlr_video.backbones import hub_configs, load_backbone
from rlr_video.backbones.layout import PACKAGED, BackboneLoadError
from rlr_video.config import PRESET_DIR, load_config
from rlr_video.memory.meta import meta_backbone
from rlr_video.train.model import backbone_options

ROOT = Path(__file__).resolve().parent.parent
WAN = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"

# Every shipped preset, planned in a fresh process whose Hugging Face home is an empty folder, two
# presets at a time (the meta-device traces are single-threaded; together they take over a minute).
PLAN_ALL = """
import contextlib
import io
import sys
from concurrent.futures import ProcessPoolExecutor

from rlr_video import cli
from rlr_video.config import PRESET_DIR


def plan(name):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["plan", name, "--budget", sys.argv[1]])
    return name, code, out.getvalue(), err.getvalue()


if __name__ == "__main__":
    names = sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))
    with ProcessPoolExecutor(2) as pool:
        for name, code, out, err in pool.map(plan, names):
            print(f"### {name}\\n{out}### {name} exit {code}", flush=True)
            sys.stderr.write(err)
"""


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """This process's Hugging Face cache: an empty folder (the hub is offline in tests)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_every_shipped_preset_plans_with_an_empty_hub_cache(tmp_path):
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    hub_ids = {load_config(name).model.path for name in presets} - {None, *PACKAGED}  # packaged: in the wheel
    assert hub_ids <= set(hub_configs.shipped_repos())  # a preset on a new hub id ships its configs
    # 160 GB (149 GiB): every preset fits in one process (cogvideox-temporal needs 126 GiB,
    # wan22-a14b-composite 115 GiB without sharding), so each prints a whole plan, not the
    # too-small message.
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    script = tmp_path / "plan_all.py"
    script.write_text(PLAN_ALL)
    proc = subprocess.run(
        [sys.executable, str(script), "160GB"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sections = proc.stdout.split("### ")[1:]
    for name in presets:
        plan = next(s for s in sections if s.startswith(f"{name}\n"))
        assert f"### {name} exit 0" in proc.stdout, (name, proc.stderr[-3000:])
        assert "memory plan for" in plan and "predicted peak" in plan, plan
    assert proc.stderr.count("planned from its config files shipped with rlr-video") == len(hub_ids)


def test_the_shipped_configs_build_what_the_plan_needs(empty_hub_cache):
    cfg = load_config("animatediff-aesthetic").model
    backbone = meta_backbone(cfg.path, family=cfg.family, **backbone_options(cfg, "meta"))
    assert hub_configs.is_shipped(Path(backbone.source))
    assert backbone.prompt_encoder.max_length == 77  # the prompt length the cost model reads
    with pytest.raises(RuntimeError, match="ships no vocabulary"):
        backbone.prompt_encoder.tokenizer(["a prompt"])
    # SD-1.5's UNet with AnimateDiff v2's motion modules (a mid block), all on the meta device
    unet = backbone.denoiser
    assert type(unet).__name__ == "UNetMotionModel" and unet.mid_block.motion_modules is not None
    assert {p.device.type for p in unet.parameters()} == {"meta"}


def test_a_cache_hit_wins_over_the_shipped_configs(empty_hub_cache):
    shipped = meta_backbone(WAN, family="wan", num_frames=5, height=32, width=32)
    assert hub_configs.is_shipped(Path(shipped.source))
    # The same hub id in the cache (a tiny Wan model stands in for it): the cache is used.
    repo = empty_hub_cache / f"models--{WAN.replace('/', '--')}"
    commit = "0" * 40
    build_tiny_wan(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    cached = meta_backbone(WAN, family="wan", num_frames=5, height=32, width=32)
    assert Path(cached.source).resolve() == (repo / "snapshots" / commit).resolve()
    size = sum(p.numel() for p in cached.denoiser.parameters())
    assert size < sum(p.numel() for p in shipped.denoiser.parameters()) / 1000


def test_a_users_hub_id_and_training_still_need_the_cache(empty_hub_cache):
    with pytest.raises(BackboneLoadError, match="'someone/their-video-model' is not a local folder"):
        meta_backbone("someone/their-video-model")
    # outside a plan the shipped configs are never a model: loading needs the real files
    with pytest.raises(BackboneLoadError, match=f"'{WAN}' is not a local folder.*HF_HUB_OFFLINE is set"):
        load_backbone(WAN)
