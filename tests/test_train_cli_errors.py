"""``rlr-video train`` errors a user meets first: an output folder it cannot write, ``--resume``
before an override, and Ctrl-C, each a short message and an exit code, never a traceback."""

from __future__ import annotations

import pytest

from rlr_video import cli
from rlr_video.train import checkpoint as ckpt
from rlr_video.train.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

# Rewards that press Ctrl-C inside a real training run: on their first or second call (one
# call per step here: RLR scores each micro-batch once, and grad_accum is 1).
STOPPERS = """
from rewards import register_reward


def stopper(at):
    calls = []

    def reward(frames, prompts):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return frames.mean(dim=(1, 2, 3, 4))

    return reward


register_reward("stop_at_1", stopper(1), needs_prompts=False)
register_reward("stop_at_2", stopper(2), needs_prompts=False)
"""


def small(out, *overrides: str) -> list[str]:
    return ["train", "toy", f"train.output_dir={out}", "train.progress=false", "train.batch_size=2", *overrides]


def test_an_unwritable_output_dir_is_named_before_the_model_loads(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # The model is not there either: the output folder is checked first, so it is what fails.
    argv = small(blocker / "run", "model.toy=null", f"model.path={tmp_path / 'no-model'}")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "'train.output_dir'" in err and str(blocker / "run") in err and "no-model" not in err
    assert err.count("\n") == 1


def test_ctrl_c_says_where_the_last_checkpoint_is_and_resume_takes_a_following_override(
    tmp_path, reward_module, capsys
):
    reward_module("stops", STOPPERS)
    out = tmp_path / "run"
    argv = small(out, "--import", "stops", "train.checkpoint_every=1", "train.steps=3")
    assert cli.main([*argv, "reward=stop_at_1"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; no checkpoint was written to {out} yet" in err and "Traceback" not in err

    assert cli.main([*argv, "reward=stop_at_2", f"train.output_dir={out}2"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; the last checkpoint is {out}2/checkpoints/step-000001 (go on with --resume)" in err
    assert "Traceback" not in err

    # `--resume key=value`: the override is an override, and --resume means the latest checkpoint.
    assert cli.main([*argv, "reward=stop_at_2", f"train.output_dir={out}2", "--resume", "train.steps=2"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(f"{out}2")] == ["step-000001", "step-000002"]
    assert [r["step"] for r in read_metrics(out.with_name("run2") / "metrics.jsonl")] == [1, 2]
