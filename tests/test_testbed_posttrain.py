"""tools/testbed/posttrain_tiny_shapes.py: LoRA reward post-training, merged back into a pipeline folder.

Runs the real tool for two updates on a random-weight tiny-shapes folder saved with
``save_pretrained`` and loads its output through the hub-model path.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from backbone_fixtures import chain_rtol
from tolerances import assert_rel_close

from rlr_video.backbones import load_backbone
from rlr_video.chain import sample_videos
from rlr_video.testbed import shapes
from rlr_video.testbed import tiny_model as tm

TOOL = Path(__file__).resolve().parent.parent / "tools" / "testbed" / "posttrain_tiny_shapes.py"


def _tool():
    spec = importlib.util.spec_from_file_location("posttrain_tiny_shapes", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prompts_keep_heldout_combinations_out_of_training() -> None:
    tool = _tool()
    trained = {p.rsplit(" on a ", 1)[0] for p in tool.training_prompts()}
    held = {shapes.combo_prompt(*c) for c in shapes.combos_for("heldout")}
    assert not trained & held
    assert len(trained) == len(shapes.TRAIN_COMBOS)
    assert {p.rsplit(" on a ", 1)[0] for p in tool.heldout_eval_prompts(2)} == held


def test_posttrain_merges_its_lora_into_a_loadable_pipeline(tmp_path) -> None:
    tool = _tool()
    model = tmp_path / "random"
    tm.make_pipeline(tm.build_components(model / "tokenizer", seed=0)).save_pretrained(
        str(model), safe_serialization=True
    )
    out = tmp_path / "post"
    options = "--steps 2 --time-limit 0 --batch-size 2 --num-steps 2 --eval-every 1 --eval-per-combo 1 --lr 1e-2"
    info = tool.main(["--model", str(model), "--out", str(out), "--threads", "1", *options.split()])
    assert info["steps"] == 2 and [row["step"] for row in info["heldout_eval"]] == [0, 1, 2]
    assert len(info["train_rewards"]) == 2 and all(0 <= r <= 1 for r in info["train_rewards"])
    saved = json.loads((out / "train_info.json").read_text())
    assert saved["estimator"] == "full_bp" and "init_info" not in saved  # the random folder has none
    assert not (tmp_path / "post.tmp").exists()

    # The merged folder samples what the base + saved LoRA samples, and differs from the base.
    prompts, seeds = ["a red circle moving left on a black background"], [3]
    options = {"num_steps": 2, "eta": 0.0, "guidance_scale": 2.0}
    merged = sample_videos(load_backbone(out, **options), prompts, seeds)
    lora_file = tmp_path / "post.lora" / "pytorch_lora_weights.safetensors"
    lora = load_backbone(model, lora_rank=8, lora_path=lora_file, **options)
    base = sample_videos(load_backbone(model, **options), prompts, seeds)
    # merged weights W + s B A against x W + s (x A) B: float32 sums in another order through
    # the chain (chain_rtol); measured ~8e-7. The LoRA itself moves the videos by far more.
    rtol = chain_rtol(lora)
    assert_rel_close(merged, sample_videos(lora, prompts, seeds), rtol, "merged LoRA against the adapter")
    assert float((merged - base).norm()) > 10 * rtol * float(base.norm()), "the LoRA must change the videos"
