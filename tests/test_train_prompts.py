"""Prompt files, the deterministic prompt stream, and multi-scale prompts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rlr_video.backbones.multiscale import MultiScaleBackbone
from rlr_video.backbones.toy import ToyBackbone
from rlr_video.prompts import (
    PromptError,
    encode_prompt,
    final_prompt,
    load_prompts,
    prompts_at,
    stage_j_range,
    stage_of,
    stage_ranges,
)


def test_txt_and_jsonl(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# comment\na red circle\n\n a blue square \n")
    assert load_prompts(txt) == ["a red circle", "a blue square"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a cat"}\n{"coarse": "a shape", "mid": "a red shape", "fine": "a red circle"}\n')
    assert load_prompts(jsonl) == ["a cat", ("a shape", "a red shape", "a red circle")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": 1}\n')
    with pytest.raises(PromptError, match="bad.jsonl:2"):
        load_prompts(bad)


def test_csv_needs_a_prompt_column_and_other_formats_are_refused(tmp_path):
    table = tmp_path / "p.csv"
    table.write_text('path,prompt\na.mp4,a red circle\nb.mp4," a blue square, moving "\n')
    assert load_prompts(table) == ["a red circle", "a blue square, moving"]
    stages = tmp_path / "s.csv"
    stages.write_text("coarse,mid,fine\na shape,a red shape,a red circle\n")
    assert load_prompts(stages) == [("a shape", "a red shape", "a red circle")]
    headless = tmp_path / "headless.csv"
    headless.write_text("a red circle\na blue square\n")
    with pytest.raises(PromptError, match="headless.csv: a CSV needs a header row"):
        load_prompts(headless)
    for name in ("p.json", "p.md", "p.yaml"):  # an unknown type names every accepted one
        (tmp_path / name).write_text('["a red circle"]')
        with pytest.raises(PromptError, match=rf"{name}: prompt files are \.txt .*, \.jsonl or \.csv, not"):
            load_prompts(tmp_path / name)


def test_prompts_module_does_not_import_the_config():
    """``config`` validates prompts with ``rlr_video.prompts``; the reverse import made a cycle."""
    code = "import sys, rlr_video.prompts; assert 'rlr_video.config' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_stream_is_a_function_of_position():
    prompts = [f"p{i}" for i in range(5)]
    whole = prompts_at(prompts, 3, 12, seed=1, shuffle=True)
    pieces = prompts_at(prompts, 3, 4, 1, True) + prompts_at(prompts, 7, 8, 1, True)
    assert whole == pieces
    epoch = prompts_at(prompts, 0, 5, 1, True)
    assert sorted(epoch) == prompts  # each epoch is a permutation
    assert prompts_at(prompts, 0, 5, 1, False) == prompts


def test_thirds_cover_the_chain():
    for T in range(3, 30):
        ranges = stage_ranges(T)
        steps = [t for lo, hi in ranges.values() for t in range(hi, lo - 1, -1)]
        assert steps == list(range(T, 0, -1))
        assert [stage_of(t, T) for t in (T, 1)] == [0, 2]
    assert stage_ranges(10) == {"coarse": (7, 10), "mid": (4, 6), "fine": (1, 3)}
    assert stage_j_range(10, 2, "fine") == (2, 2)  # sub-chain {3, 2}: step 1 is FO's
    assert stage_j_range(10, 2, "coarse") == (7, 9)


def test_multiscale_backbone_uses_each_third():
    toy = ToyBackbone.create(num_steps=9, latent_shape=(2, 2, 4, 4))
    wrapped = MultiScaleBackbone(toy)
    prompt = encode_prompt(("a shape", "a red shape", "a red circle"))
    assert final_prompt(prompt) == "a red circle"
    cond = wrapped.encode([prompt])
    x = torch.randn(1, 2, 2, 4, 4)
    with torch.no_grad():
        for step, text in ((9, "a shape"), (5, "a red shape"), (2, "a red circle")):
            expected = toy.predict(x, step, toy.encode([text]))
            assert torch.equal(wrapped.predict(x, step, cond), expected)
    assert wrapped.num_steps == 9 and wrapped.trainable_parameters() == toy.trainable_parameters()
