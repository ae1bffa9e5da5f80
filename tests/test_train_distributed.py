"""Two CPU processes (gloo) take the same update as one process with the same global batch,
and only process 0 writes files."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rlr_video.config import load_config
from rlr_video.train.metrics import read_metrics
from rlr_video.train.trainer import Trainer

# Each process records the reduced gradient of the first update, and every write it makes
# under the run's output folder: an audit hook sees every open-for-writing, mkdir, rename and
# delete made from Python, and a wrapper covers the one writer that bypasses Python's I/O
# (safetensors).
WORKER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    out, dumps = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    rank = int(os.environ["RANK"])
    writes = []

    def inside(path):
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(out)
        except (TypeError, ValueError):
            return False

    def audit(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and inside(path):
                writes.append([event, os.fsdecode(path)])
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree"):
            if inside(args[0]):
                writes.append([event, os.fsdecode(args[0])])

    sys.addaudithook(audit)
    import safetensors.torch
    real_save_file = safetensors.torch.save_file
    def save_file(tensors, filename, *a, **k):
        writes.append(["safetensors", str(filename)])
        return real_save_file(tensors, filename, *a, **k)
    safetensors.torch.save_file = save_file

    import torch
    from rlr_video.config import load_config
    from rlr_video.train.trainer import Trainer

    class Dump(Trainer):
        def on_gradients(self, step):
            if step == 0:
                torch.save([p.grad.clone() for p in self.params], dumps / f"grads-rank{self.rank}.pt")

    config = load_config("toy", [f"train.output_dir={out}", *sys.argv[3:]])
    trainer = Dump(config)
    assert trainer.world == 2, trainer.world
    trainer.train()
    (dumps / f"writes-rank{rank}.json").write_text(json.dumps(writes))
    """
)

VOLATILE = ("step_time", "peak_mem_mb", "eval_time")
# The held-out evaluation: 5 videos in batches of 2, so process 0 samples batches 0 and 2, process 1 batch 1.
GUARD = "train.eval={reward: redness, items: [a red circle, a blue square], every: 1, videos: 5, batch_size: 2}"
COMMON = ["train.steps=2", "train.batch_size=2", "train.checkpoint_every=1", "train.progress=false", GUARD]

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

# Two worker processes on a 2-core machine: every other CPU-bound job takes its share from both.
# Measured 15-20 s quiet and 100-120 s at load 14-16 (FSDP, this test): a limit 5x that.
TWO_PROCESSES_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FirstGradients(Trainer):
    def on_gradients(self, step):
        if step == 0:
            self.first = [p.grad.clone() for p in self.params]


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None, reason="no accelerate")
def test_two_processes_match_one_process_and_only_rank0_writes(tmp_path):
    # One process, two micro-batches of 2 == two processes, one micro-batch of 2 each; the
    # held-out evaluation, shared out by batches, logs the same numbers as one process. The
    # launcher gives each worker one thread, as the module fixture gives this process: the
    # thread count changes the order of float sums inside convolutions (~1e-4 relative here).
    config = load_config("toy", [f"train.output_dir={tmp_path / 'one'}", *COMMON, "train.grad_accum=2"])
    single = FirstGradients(config)
    single.train()

    script, dumps, out = tmp_path / "worker.py", tmp_path / "dumps", tmp_path / "two"
    script.write_text(WORKER)
    dumps.mkdir()
    accelerate = str(Path(sys.executable).parent / "accelerate")
    # --multi_gpu is accelerate's torchrun launcher; without a GPU the trainer forms a gloo
    # CPU group (`--cpu --num_processes 2` would start one process without mpirun).
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    proc = subprocess.run(
        [*launch, str(script), str(out), str(dumps), *COMMON, "train.grad_accum=1"],
        capture_output=True,
        text=True,
        timeout=TWO_PROCESSES_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0, rank1 = (torch.load(dumps / f"grads-rank{r}.pt") for r in (0, 1))
    for g1, g0, g in zip(rank1, rank0, single.first, strict=True):
        assert torch.equal(g0, g1)  # every process applies the same update
        assert torch.equal(g0, g)  # the same sum in the same order: bitwise
    assert json.loads((dumps / "writes-rank1.json").read_text()) == []
    seen_by_rank0 = {event for event, _ in json.loads((dumps / "writes-rank0.json").read_text())}
    assert {"open", "os.mkdir", "os.rename", "safetensors"} <= seen_by_rank0  # the audit does see writes
    one, two = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [r["samples"] for r in two] == [r["samples"] for r in one] == [0, 4, 8]  # step 0: held-out only
    assert all("eval/redness" in r and "eval/training_reward" in r for r in two)
    for a, b in zip(one, two, strict=True):
        assert {k: v for k, v in a.items() if k not in VOLATILE} == {k: v for k, v in b.items() if k not in VOLATILE}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
