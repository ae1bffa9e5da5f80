"""Config schema: presets load and validate, overrides apply, errors name key, value and allowed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rlr_video import cli
from rlr_video.config import PRESET_DIR, ConfigError, load_config

PRESETS = sorted(PRESET_DIR.glob("*.yaml"))


def test_presets_exist():
    names = {p.stem for p in PRESETS}
    expected = {"tiny-shapes", "toy", "animatediff-aesthetic", "zeroscope-clip", "cogvideox-temporal", "wan-composite"}
    expected |= {"wan14b-composite", "tiny-shapes-direction", "wan22-ti2v-5b-composite", "wan22-a14b-composite"}
    expected |= {"tiny-shapes-wan", "tiny-shapes-wan-direction"}
    assert expected <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_and_validates(preset: Path):
    config = load_config(preset)
    assert config.estimator.name in ("rlr", "full_bp", "truncated_bp", "lr")
    assert Path(config.prompts.path).is_file()  # resolved against the preset's folder
    if config.model.path is not None:  # a real family: the paper's defaults
        cpu_testbed = config.model.path in ("tiny-shapes", "tiny-shapes-wan")
        steps = (10, 10) if cpu_testbed else (25, 50)  # the CPU testbed: short chains
        assert config.estimator.h == 2 and steps[0] <= config.model.num_steps <= steps[1]
        assert 4 <= config.model.lora_rank <= 16
        from rlr_video.backbones import BackboneOptions
        from rlr_video.train.model import backbone_options

        BackboneOptions.from_kwargs(**backbone_options(config.model))  # every option is one load_backbone takes


def test_default_is_the_cpu_preset():
    assert load_config(None).model.path == "tiny-shapes"


def test_overrides_are_typed():
    c = load_config(
        "toy",
        ["estimator.h=3", "train.mixed_precision=no", "reward={brightness: 1, redness: 0.5}", "estimator.j=[2,4]"],
    )
    assert c.estimator.h == 3 and c.train.mixed_precision == "no"
    assert c.reward == {"brightness": 1.0, "redness": 0.5} and c.estimator.j == [2, 4]


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("estimator.name=rrl", "estimator.name", "full_bp, grpo, lr, nft, rlr, truncated_bp"),
        ("estimator.h=-1", "estimator.h", ">= 0"),  # 0: RLR without HO, the paper's ablation
        ("estimator.h=12", "estimator.h", "0 ... 9"),
        ("estimator.fo_steps=9", "estimator.h", "0 ... 1"),
        ("estimator.h=two", "estimator.h", "an integer"),
        ("train.stesp=3", "train.stesp", "did you mean 'steps'"),
        ("reward=aesthtic", "reward", "did you mean 'aesthetic'"),
        ("train.mixed_precision=fp16", "train.mixed_precision", "no, bf16"),
        ("estimator.j=[1,3]", "estimator.j", "2 <= a <= b <= 9"),
        ("prompts.path=missing.txt", "prompts.path", "prompt file"),
        ("model.path=some/model", "model", "exactly one of model.toy or model.path"),
        ("train.log_with=[tensorbored]", "train.log_with[0]", "tensorboard, wandb"),
        ("prompts.ho_stage=fine", "prompts.ho_stage", "multi-scale"),
        ("reward={color_match: {weight: 1, gain: 2}}", "reward", "reward 'color_match' has no option 'gain'"),
        ("reward={flicker: {weight: one}}", "reward", "weight must be a number"),
        ("reward=saturation", "reward", "--import MODULE"),
    ],
)
def test_errors_name_key_value_and_allowed(override, key, allowed):
    with pytest.raises(ConfigError) as info:
        load_config("toy", [override])
    assert info.value.key == key
    assert allowed in str(info.value) and key in str(info.value)
    assert repr(info.value.value) in str(info.value)


def test_a_tracker_without_its_package_is_a_config_error(monkeypatch):
    # tensorboard is a dev dependency: hide it, as on an install without it
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        load_config("tiny-shapes", ["train.log_with=[tensorboard]"])


def test_broken_config_fails_before_any_model_loads(monkeypatch, capsys, tmp_path):
    import rlr_video.train.model as model

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a broken config")

    monkeypatch.setattr(model, "build_backbone", no_model)
    broken = tmp_path / "broken.yaml"
    broken.write_text((PRESET_DIR / "tiny-shapes.yaml").read_text().replace("name: rlr", "name: rl"))
    assert cli.main(["train", str(broken), f"train.output_dir={tmp_path / 'run'}"]) == 2
    assert "estimator.name" in capsys.readouterr().err
    assert cli.main(["train", "tiny-shapes", "optim.lr=-1", f"train.output_dir={tmp_path / 'run'}"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_multiscale_stage_validation(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"coarse": "a shape", "mid": "a red shape", "fine": "a red circle"}\n')
    mid = [f"prompts.path={prompts}", "prompts.ho_stage=mid", "estimator.fo_steps=2"]
    assert load_config("tiny-shapes", mid).prompts.ho_stage == "mid"
    with pytest.raises(ConfigError, match="estimator.j"):
        load_config("tiny-shapes", [*mid, "estimator.j=[2,3]"])
    with pytest.raises(ConfigError, match="prompts.ho_stage"):  # the preset's fo_steps 5 covers the mid third
        load_config("tiny-shapes", mid[:2])
    with pytest.raises(ConfigError, match="prompts.ho_stage"):  # a third of 4 steps cannot hold h = 2
        load_config(
            "tiny-shapes",
            [
                f"prompts.path={prompts}",
                "prompts.ho_stage=fine",
                "estimator.fo_steps=2",
                "model.num_steps=4",
                "estimator.zo_samples=null",
            ],
        )
    # 10 steps: the fine third is steps 1-3; with fo_steps 2 only j = 3 is left, too few for h = 2.
    fine = [f"prompts.path={prompts}", "prompts.ho_stage=fine", "estimator.zo_samples=null"]
    assert load_config("toy", [*fine, "estimator.h=1", "estimator.fo_steps=2"]).estimator.fo_steps == 2
    with pytest.raises(ConfigError, match="above the fo_steps"):
        load_config("toy", [*fine, "estimator.fo_steps=2"])


def test_fo_steps_reaches_the_estimator_and_moves_the_ranges():
    from rlr_video.config import run_context

    c = load_config("toy", ["estimator.fo_steps=3", "estimator.j=[4,5]", "estimator.zo_samples=5"])
    assert c.estimator.build(run_context(c)).fo_steps == 3
    with pytest.raises(ConfigError, match="4 <= a <= b <= 9"):
        load_config("toy", ["estimator.fo_steps=3", "estimator.j=[3,5]"])
    # more ZO samples than the 5 steps left means all of them (see test_estimators' call counts)
    assert load_config("toy", ["estimator.fo_steps=3", "estimator.zo_samples=6"]).estimator.zo_samples == 6


TOY_LINES = (PRESET_DIR / "toy.yaml").read_text().replace("path: prompts/", f"path: {PRESET_DIR}/prompts/")
BROKEN_FILES = {
    # a flow list left open on line 9: YAML names that line, the text names its key
    "syntax": (TOY_LINES.replace("num_steps: 10", "num_steps: [10, 2"), ":9: invalid YAML near 'num_steps: [10, 2"),
    "interpolation": (TOY_LINES.replace("steps: 50", "steps: ${train.nosuch}"), ":34: config key 'train.steps'"),
}


@pytest.mark.parametrize("command", ["train", "plan", "render"])
@pytest.mark.parametrize("broken", sorted(BROKEN_FILES))
def test_a_broken_yaml_file_is_one_line_and_exit_2_from_every_command(command, broken, tmp_path, capsys):
    text, expected = BROKEN_FILES[broken]
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    assert cli.main([command, str(path), f"train.output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlr-video {command}: {path}{expected}") and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_mistyped_preset_gets_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'tiny-shapes'"):
        load_config("tiny-shape")


@pytest.mark.parametrize("command", ["train", "plan", "render"])
def test_an_unknown_preset_says_what_was_given_not_a_config_key(command, capsys):
    assert cli.main([command, "tiny-shape"]) == 2
    err = capsys.readouterr().err
    presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    expected = f"no preset or YAML file named 'tiny-shape' (did you mean 'tiny-shapes'?); presets: {presets}"
    assert err == f"rlr-video {command}: {expected}\n"
    assert cli.main(["train", "nowhere/run.yaml"]) == 2
    assert "no preset or YAML file named 'nowhere/run.yaml'; presets:" in capsys.readouterr().err


def test_leave_one_out_of_a_batch_of_one_needs_another_baseline():
    lonely = ["train.batch_size=1", "train.prompt_baseline=false"]
    with pytest.raises(ConfigError) as info:
        load_config("toy", lonely)
    assert info.value.key == "train.batch_size" and "estimator.baseline: loo" in str(info.value)
    # Valid: another baseline centres the rewards, or a pathwise estimator uses none.
    load_config("toy", lonely[:1])
    load_config("toy", [*lonely, "estimator.baseline=running"])
    load_config("toy", [*lonely, "estimator.name=full_bp"])


@pytest.mark.parametrize("command", ["train", "plan", "render"])
def test_a_model_that_is_not_there_is_exit_2_from_every_command(command, tmp_path, capsys):
    missing = tmp_path / "no-model"
    argv = [command, "toy", "model.toy=null", f"model.path={missing}", f"train.output_dir={tmp_path / 'run'}"]
    argv += ["--budget", "1GiB"] if command == "plan" else []
    assert cli.main(argv) == 2
    assert str(missing) in capsys.readouterr().err
