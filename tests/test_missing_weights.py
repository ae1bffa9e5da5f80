"""``rlr-video train`` on a machine without a preset's weights names every missing one at once
(base model, motion adapter, reward models), one line each with the line that fetches it."""

from __future__ import annotations

import json

import pytest
from backbone_fixtures import build_tiny_sd_base_and_motion_adapter
from huggingface_hub import constants
from reward_fixtures import aesthetic_head, tiny_dino

from rlr_video import cli

# train.mixed_precision=no: one process keeps the Accelerator settings it first made.
RUN = ["train.mixed_precision=no", "train.progress=false"]


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """This process's Hugging Face cache: an empty folder (the hub is offline in tests)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def listed(err: str) -> dict[str, str]:
    """The error's items, {what: how to fetch it}, from its indented lines."""
    items = {}
    for line in err.splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("  ("):
            what, fetch = line.strip().split("  ", 1)
            items[what] = fetch.strip()
    return items


def test_a_preset_with_nothing_downloaded_names_every_weight_it_needs(tmp_path, empty_hub_cache, capsys):
    argv = ["train", "animatediff-aesthetic", f"train.output_dir={tmp_path / 'run'}", *RUN]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlr-video train: 4 of the weights this run needs are not on this machine:\n"), err
    assert listed(err) == {
        "model": "hf download emilianJR/epiCRealism",
        "motion adapter": "hf download guoyww/animatediff-motion-adapter-v1-5-2",
        "reward aesthetic: aesthetic head weights": "hf download trl-lib/ddpo-aesthetic-predictor aesthetic-model.pth",
        "reward aesthetic: open_clip ViT-L-14 'openai'": (
            "hf download timm/vit_large_patch14_clip_224.openai open_clip_pytorch_model.bin"
        ),
    }
    assert "HF_HUB_OFFLINE is set" in err.splitlines()[-1]
    assert len(err.splitlines()) == 6 and "Traceback" not in err and "Error" not in err  # no raw exception text
    assert not (tmp_path / "run" / "config.yaml").exists()  # stopped before the run started


def test_only_the_missing_weights_are_listed(tmp_path, empty_hub_cache, capsys):
    base, adapter = build_tiny_sd_base_and_motion_adapter(tmp_path / "models")
    for weights in adapter.glob("*.safetensors"):  # the adapter's configs only, as a plan downloads
        weights.unlink()
    reward = json.dumps({"aesthetic": {"head": aesthetic_head()}, "temporal": {"model": tiny_dino()}})
    argv = [
        "train",
        "animatediff-aesthetic",
        f"model.path={base}",
        f"model.options.motion_adapter={adapter}",
        f"reward={reward}",
        f"train.output_dir={tmp_path / 'run'}",
        *RUN,
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlr-video train: 2 of the weights this run needs are not on this machine:\n"), err
    # present: the base, the aesthetic head, the temporal reward's vision model
    assert listed(err) == {
        "motion adapter (configs only)": "save the whole model there (save_pretrained)",
        "reward aesthetic: open_clip ViT-L-14 'openai'": (
            "hf download timm/vit_large_patch14_clip_224.openai open_clip_pytorch_model.bin"
        ),
    }


# A reward that records whether the hub was offline when it was built, and is missing its weights.
PROBE = """
from huggingface_hub import constants
from rewards import MissingWeightsError, register_reward

OFFLINE = []


def probe():
    OFFLINE.append(constants.HF_HUB_OFFLINE)
    raise MissingWeightsError("probe weights missing", [("probe weights", "hf download someone/probe")])


register_reward("probe", factory=probe)
"""


def test_a_hub_that_does_not_answer_is_not_asked_again(tmp_path, empty_hub_cache, monkeypatch, reward_module, capsys):
    import sys

    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    asked = []

    def no_answer(repo_id, **kwargs):  # what snapshot_download raises without a network
        asked.append(repo_id)
        raise LocalEntryNotFoundError("Got: ConnectError: [Errno -2] Name or service not known\nAn error happened")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_answer)
    reward_module("probe_reward", PROBE)
    argv = ["train", "animatediff-aesthetic", "--import", "probe_reward", "reward=probe", *RUN]
    assert cli.main([*argv, f"train.output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert asked == ["emilianJR/epiCRealism", "guoyww/animatediff-motion-adapter-v1-5-2"]
    # the rewards were built with the hub off: each ask would retry for a minute in vain
    assert sys.modules["probe_reward"].OFFLINE == [True] and constants.HF_HUB_OFFLINE is False
    assert listed(err) == {
        "model": "hf download emilianJR/epiCRealism",
        "motion adapter": "hf download guoyww/animatediff-motion-adapter-v1-5-2",
        "reward probe: probe weights": "hf download someone/probe",
    }
    assert err.splitlines()[-1].startswith("  (the hub cannot be reached from here: fetch them where it can")


def test_a_hub_failure_reads_as_a_few_words_on_one_line(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    from rlr_video.backbones.layout import hub_reason

    # What snapshot_download raised here without a network: the connection error on a line of its own.
    unreachable = LocalEntryNotFoundError(
        "Got: ConnectError: [Errno -2] Name or service not known\nAn error happened while trying to locate the "
        "files on the Hub, and we cannot find the appropriate snapshot folder for the specified revision."
    )
    assert hub_reason(unreachable) == "HF_HUB_OFFLINE is set"  # the tests' setting says it all
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub_reason(unreachable) == "the hub cannot be reached"
    assert hub_reason(OSError("Disk quota exceeded. Free some space\nsecond line")) == "Disk quota exceeded"


def test_the_held_out_rewards_weights_are_named_too(tmp_path, empty_hub_cache, reward_module, capsys):
    reward_module("probe_reward", PROBE)
    held = "train.eval={reward: {judge: {reward: probe}}, items: [a red circle]}"
    argv = ["train", "toy", "--import", "probe_reward", held, f"train.output_dir={tmp_path / 'run'}", *RUN]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert listed(err) == {"held-out reward judge: probe weights": "hf download someone/probe"}
    assert not (tmp_path / "run" / "config.yaml").exists()  # stopped before the run started
