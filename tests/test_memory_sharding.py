"""The planner per process with ``--processes N --sharding fsdp``: the denoiser's blocks split
over the processes plus two gathered blocks; LoRA, AdamW state and activations unchanged."""

from __future__ import annotations

import json
import shutil

import pytest
from backbone_fixtures import single_thread, tiny_model_dir, tiny_options

from rlr_video import cli
from rlr_video.memory.cost_model import CostModel
from rlr_video.memory.meta import meta_backbone
from rlr_video.memory.planner import BudgetTooSmall, Planner
from rlr_video.memory.recompute import MemoryOptions

LAYERS = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    """The tiny Wan with 8 transformer blocks: its configs only (the planner reads no weights)."""
    path = tmp_path_factory.mktemp("wan") / "wan8"
    shutil.copytree(tiny_model_dir("wan"), path)
    config = path / "transformer" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"num_layers": LAYERS}))
    return path


def _cost_models(path, processes: int):
    backbone = meta_backbone(path, **tiny_options("wan"))
    backbone.options.lora_rank = 2  # costed, not injected
    return CostModel(backbone, device="cpu"), CostModel(backbone, device="cpu", processes=processes, sharding="fsdp")


@pytest.mark.parametrize("processes", [2, 8])
def test_fsdp_divides_the_blocks_over_the_processes(wan_dir, processes):
    whole, sharded = _cost_models(wan_dir, processes)
    model = whole.backbone.denoiser
    block = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())
    assert len(model.blocks) == LAYERS and block > 0
    a, b = whole.fixed(), sharded.fixed()
    # 1/N of the blocks stays, the rest is freed; two blocks are gathered while computing
    assert a.weights - b.weights == LAYERS * block - LAYERS * block // processes - 2 * block
    assert a.weights - b.weights > 0
    assert (b.trainable, b.gradients, b.optimizer) == (a.trainable, a.gradients, a.optimizer)
    assert a.trainable > 0
    assert b.load == a.weights and a.load == 0  # loading holds everything, once
    one, per_process = Planner(whole, batch=1), Planner(sharded, batch=1)
    for planner in (one, per_process):
        assert planner.estimate(1, MemoryOptions()).update == one.estimate(1, MemoryOptions()).update
    assert CostModel(whole.backbone, device="cpu", processes=processes).fixed().weights == a.weights


def test_a_budget_that_cannot_hold_the_whole_model_while_loading_is_refused(wan_dir):
    _, sharded = _cost_models(wan_dir, 8)
    with pytest.raises(BudgetTooSmall, match="too small to load the model"):
        Planner(sharded, batch=1).plan(sharded.fixed().load - 1)


def test_plan_command_per_process(wan_dir, tmp_path, capsys):
    args = ["plan", "toy", "model.toy=null", f"model.path={wan_dir}", "model.height=32", "model.width=32"]
    args += ["model.frames=5", "model.num_steps=4", "model.lora_rank=2", "--budget", "1GiB"]
    one, eight = tmp_path / "one.json", tmp_path / "eight.json"
    assert cli.main([*args, "--json", str(one)]) == 0
    assert cli.main([*args, "--processes", "8", "--sharding", "fsdp", "--json", str(eight)]) == 0
    printed = capsys.readouterr().out
    assert "per process (8 processes, sharding fsdp)" in printed and "(loading, before sharding)" in printed
    one, eight = json.loads(one.read_text()), json.loads(eight.read_text())
    assert eight["processes"] == 8 and eight["sharding"] == "fsdp" and one["fixed"] > eight["fixed"]
    assert one["load"] == 0 < eight["load"]
    assert cli.main([*args, "--processes", "0"]) == 2
    assert "--processes 0" in capsys.readouterr().err
