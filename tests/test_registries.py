"""A family is one file and an estimator is one file: each is added here from a module of its own,
then used through the same paths as the shipped ones (load -> rollout -> plan; a preset trained)."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from backbone_fixtures import single_thread, tiny_model_dir, tiny_options  # noqa: F401

from rlr_video import cli
from rlr_video.backbones import family as family_registry
from rlr_video.backbones import load_backbone
from rlr_video.backbones.family import MissingFamilyHook
from rlr_video.chain import rollout
from rlr_video.estimators import registry as estimator_registry
from rlr_video.memory.cost_model import CostModel
from rlr_video.memory.planner import Planner
from rlr_video.train.metrics import read_metrics

MY_FAMILY = '''
"""Wan renamed: the family file a user would write for a fork of Wan 2.1."""
from rlr_video.backbones.family import get_family, register_family
from rlr_video.backbones.families.wan import WanBackbone

wan = get_family("wan")


@register_family(
    "my-wan",
    pipelines=("MyWanPipeline",),
    denoisers=wan.denoisers,
    layout=wan.layout,
    decoder=wan.decoder,
    denoiser_kind=wan.denoiser_kind,
    shard_blocks=wan.shard_blocks,
    checkpoint_blocks=wan.checkpoint_blocks,
    decode_steps=wan.decode_steps,
)
class MyWan(WanBackbone):
    pass


@register_family("my-wan-no-decoder", denoisers=wan.denoisers, layout=wan.layout, denoiser_kind="transformer")
class MyWanWithoutDecoder(WanBackbone):
    pass
'''

MY_ESTIMATOR = '''
"""One file: a config dataclass, its rules, and the estimator (the last step taken pathwise,
its gradient scaled)."""
from dataclasses import dataclass, field

from rlr_video.errors import ConfigError
from rlr_video.estimators.pathwise import pathwise
from rlr_video.estimators.registry import BaseEstimator, EstimatorConfig, bounds, register_estimator


@dataclass
class ScaledLastStepConfig(EstimatorConfig):
    name: str = "scaled_last_step"
    scale: float = field(default=1.0, metadata=bounds(0.0))

    def validate(self, run):
        super().validate(run)
        if run.batch_size < 2:
            raise ConfigError("train.batch_size", run.batch_size, ">= 2 with estimator.name=scaled_last_step")

    def build(self, run):
        return ScaledLastStep(self.scale)


@register_estimator("scaled_last_step", ScaledLastStepConfig)
class ScaledLastStep(BaseEstimator):
    def __init__(self, scale):
        self.scale, self.updates = scale, 0

    def estimate(self, backbone, reward, prompts, generator, reward_offset=None):
        estimate = pathwise(backbone, reward, prompts, generator, 1)
        for p in backbone.trainable_parameters():
            if p.grad is not None:
                p.grad.mul_(self.scale)
        self.updates += 1
        return estimate

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state["updates"]
'''


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A folder on sys.path for the user's modules; registrations made in the test are undone."""
    # the shipped ones registered first, so that restoring leaves them in place
    families = family_registry.families()
    estimator_registry.available_estimators()
    estimators = dict(estimator_registry._ESTIMATORS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    family_registry._FAMILIES.clear()
    family_registry._FAMILIES.update(families)
    estimator_registry._ESTIMATORS.clear()
    estimator_registry._ESTIMATORS.update(estimators)
    for name in ("my_family", "my_estimator"):
        sys.modules.pop(name, None)


def test_a_family_added_from_one_file_loads_rolls_out_and_plans(module_dir, single_thread):  # noqa: F811
    (module_dir / "my_family.py").write_text(textwrap.dedent(MY_FAMILY))
    __import__("my_family")
    options = tiny_options("wan", num_steps=4, lora_rank=2)
    mine = load_backbone(tiny_model_dir("wan"), family="my-wan", **options)
    wan = load_backbone(tiny_model_dir("wan"), family="wan", **options)
    assert type(mine).__name__ == "MyWan" and mine.family == "my-wan"

    cond = mine.encode(["a red circle moving left"])
    traj = rollout(mine, cond, torch.Generator().manual_seed(0), 1)
    reference = rollout(wan, wan.encode(["a red circle moving left"]), torch.Generator().manual_seed(0), 1)
    assert torch.equal(traj.sample, reference.sample)  # the same model through the new family's file

    plans = [Planner(CostModel(b), batch=1).plan("1GiB") for b in (mine, wan)]
    assert plans[0].as_dict() == plans[1].as_dict()

    # Two families now claim WanTransformer3DModel: detection says so instead of guessing.
    with pytest.raises(ValueError, match="fits the families wan, my-wan.*: pass family="):
        load_backbone(tiny_model_dir("wan"), **options)

    lacking = load_backbone(tiny_model_dir("wan"), family="my-wan-no-decoder", **options)
    with pytest.raises(MissingFamilyHook, match="'my-wan-no-decoder' declares no decoder"):
        Planner(CostModel(lacking), batch=1).plan("1GiB")


def test_an_estimator_added_from_one_file_trains_from_a_preset_and_resumes(module_dir, monkeypatch, capsys):
    (module_dir / "my_estimator.py").write_text(textwrap.dedent(MY_ESTIMATOR))
    monkeypatch.chdir(module_dir)
    out = module_dir / "run"
    # the toy preset's RLR keys (h, zo, ...) belong to another estimator: they are left out
    base = ["train", "toy", "estimator.name=scaled_last_step", "train.progress=false", f"train.output_dir={out}"]
    run = [*base, "estimator.scale=0.5", "train.batch_size=2", "train.checkpoint_every=1"]
    assert cli.main([*run, "train.steps=2", "--import", "my_estimator"]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert len(rows) == 2 and all(r["grad_norm"] > 0 and r["skipped"] == 0.0 for r in rows)
    assert cli.main([*run, "train.steps=3", "--resume", "--import", "my_estimator"]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    capsys.readouterr()

    assert cli.main([*base, "estimator.scael=2", "--import", "my_estimator"]) == 2
    assert "estimator.scael" in capsys.readouterr().err  # a key no estimator knows is an error
    assert cli.main([*base, "train.batch_size=1", "--import", "my_estimator"]) == 2
    assert ">= 2 with estimator.name=scaled_last_step" in capsys.readouterr().err  # its own rule
