"""The trainer on the CPU preset: trains, skips non-finite rewards, checkpoints and resumes exactly."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tolerances import EPS, layers

from rlr_video import cli
from rlr_video.config import load_config
from rlr_video.train import checkpoint as ckpt
from rlr_video.train.metrics import read_metrics
from rlr_video.train.model import TRAINABLE_FILE
from rlr_video.train.trainer import Trainer

STEPS = 6
VOLATILE = ("step_time", "peak_mem_mb", "eval_time")  # wall-clock and memory: not part of the result
# The held-out evaluation (train.eval) of the resume tests: every 2 steps, 3 videos in 2 batches.
GUARD = "train.eval={reward: redness, items: [a red circle, a blue square], every: 2, videos: 3, batch_size: 2}"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the in-process tests (see conftest.py)

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py


def tiny(out: Path, *overrides: str):
    return load_config(
        "toy",
        [
            f"train.output_dir={out}",
            "train.progress=false",
            f"train.steps={STEPS}",
            "train.checkpoint_every=2",
            "train.batch_size=2",
            *overrides,
        ],
    )


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(ckpt.latest_checkpoint(out) / ckpt.WEIGHTS_DIR / TRAINABLE_FILE)


def stable_metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in read_metrics(out / "metrics.jsonl")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of STEPS steps, with a held-out evaluation."""
    out = tmp_path_factory.mktemp("reference")
    Trainer(tiny(out, GUARD)).train()
    return out


# A child process that trains and is SIGKILLed at a chosen moment.
KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from rlr_video.config import load_config
    from rlr_video.train.trainer import Trainer

    mode, out = sys.argv[1], sys.argv[2]
    config = load_config("toy", [f"train.output_dir={out}", "train.progress=false",
                                 "train.steps=6", "train.checkpoint_every=2", "train.batch_size=2", *sys.argv[3:]])

    class Run(Trainer):
        def on_step_end(self, step, record):
            if mode == "after-step-3" and step == 3:  # after checkpoint 2 and one more metrics line
                os.kill(os.getpid(), signal.SIGKILL)

    if mode == "inside-checkpoint-4":
        real_save = torch.save

        def dying_save(obj, f, *args, **kwargs):
            if "step-000004" in str(f):  # the weights are in the temp folder; tear state.pt and die
                with open(f, "wb") as handle:
                    handle.write(b"torn")
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        torch.save = dying_save
    Run(config).train()
    """
)


def run_killed(tmp_path: Path, mode: str) -> Path:
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(script), mode, str(out), GUARD],
        capture_output=True,
        text=True,
        timeout=300,
        env=ONE_THREAD,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return out


def test_sigkill_after_checkpoint_then_resume_is_bitwise_identical(tmp_path, reference):
    out = run_killed(tmp_path, "after-step-3")
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-000002"]
    # step 3 was logged, then lost; step 0's row is the held-out evaluation of the base model
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1, 2, 3]

    resumed = Trainer(tiny(out, GUARD), resume="auto")
    assert resumed.step == 2
    assert [r["step"] for r in resumed.train()] == [3, 4, 5, 6]  # steps 1-2 were not redone
    for name, tensor in final_weights(reference).items():
        assert torch.equal(final_weights(out)[name], tensor), name
    assert stable_metrics(out) == stable_metrics(reference)  # the held-out evaluations too
    assert [r["step"] for r in stable_metrics(out) if "eval/redness" in r] == [0, 2, 4, 6]
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-000002", "step-000004", "step-000006"]


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, reference):
    out = run_killed(tmp_path, "inside-checkpoint-4")
    root = ckpt.checkpoint_root(out)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-000002"]
    leftovers = [p for p in root.iterdir() if p.name.startswith(".tmp-step-000004")]
    assert leftovers and (leftovers[0] / ckpt.WEIGHTS_DIR / TRAINABLE_FILE).is_file()  # died mid-write

    state = ckpt.load_state(root / "step-000002")
    assert state["step"] == 2 and state["prompt_position"] == 2
    assert [r["step"] for r in Trainer(tiny(out, GUARD), resume="auto").train()] == [3, 4, 5, 6]
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())  # cleaned up
    for name, tensor in final_weights(reference).items():
        assert torch.equal(final_weights(out)[name], tensor), name
    assert stable_metrics(out) == stable_metrics(reference)


def test_keep_last_and_a_fresh_run_refuses_an_old_output_dir(tmp_path):
    out = tmp_path / "run"
    Trainer(tiny(out, "train.steps=5", "train.keep_last=2")).train()
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-000004", "step-000005"]
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny(out))


class NonFinite:
    """The configured reward, but NaN (or inf) for every video of update ``bad_step``."""

    def __init__(self, inner, trainer: Trainer, bad_step: int, value: float):
        self.inner, self.trainer, self.bad_step, self.value = inner, trainer, bad_step, value
        self.name, self.differentiable = inner.name, True

    def __call__(self, frames, prompts):
        scores = self.inner(frames, prompts)
        if self.trainer.step == self.bad_step:
            scores = scores * 0 + self.value
        return scores


class Snapshots(Trainer):
    def on_step_end(self, step, record):
        self.snapshots = getattr(self, "snapshots", {})
        self.snapshots[step] = (
            [p.detach().clone() for p in self.params],
            json.loads(json.dumps(self.optimizer.state_dict()["state"], default=lambda t: t.tolist())),
        )


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_reward_skips_the_update(tmp_path, value):
    trainer = Snapshots(tiny(tmp_path / "run", "train.steps=3", "train.checkpoint_every=10"))
    trainer.reward.reward = NonFinite(trainer.reward.reward, trainer, bad_step=1, value=value)
    records = trainer.train()
    assert [r["skipped"] for r in records] == [0.0, 1.0, 0.0]
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[1]["skipped"] == 1.0  # logged
    (w1, opt1), (w2, opt2), (w3, _) = (trainer.snapshots[s] for s in (1, 2, 3))
    assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))  # weights untouched
    assert opt1 == opt2  # AdamW moments and step count untouched
    assert not all(torch.equal(a, b) for a, b in zip(w2, w3, strict=True))  # training goes on


def test_the_command_leaves_the_process_group_before_exiting(tmp_path):
    """`rlr-video train` destroys a multi-process run's process group when it ends, as PyTorch
    asks: left to the interpreter's exit, gloo's threads can abort the finished process."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert cli.main(["train", "toy", "train.steps=1", f"train.output_dir={tmp_path / 'run'}"]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_cpu_default_trains_from_the_command_line(tmp_path):
    # The default preset is tiny-shapes (the shipped model), made small to be quick: 6 steps
    # with 2 FO and 2 HO steps leave the preset's 2 ZO samples two steps; its held-out guard
    # (the ground truth on held-out prompts) on 2 videos.
    out = tmp_path / "run"
    small = ["train.steps=3", "train.batch_size=2", "model.num_steps=6", "estimator.fo_steps=2"]
    small += ["train.eval.videos=2"]
    assert cli.main(["train", *small, f"train.output_dir={out}", "train.progress=false"]) == 0
    held, *rows = read_metrics(out / "metrics.jsonl")
    assert held["step"] == 0 and 0 <= held["eval/truth"] <= 1 and "reward_mean" not in held
    assert [r["step"] for r in rows] == [1, 2, 3] and [("eval/truth" in r) for r in rows] == [False, False, True]
    for row in rows:
        for key in ("reward_mean", "grad_norm", "fo_norm", "ho_norm", "zo_norm", "step_time", "peak_mem_mb"):
            assert isinstance(row[key], float) and row[key] == row[key], key
    assert (out / "reward_curve.png").stat().st_size > 0 and (out / "config.yaml").is_file()
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-000003"]


def test_a_run_ends_with_a_summary_of_steps_reward_and_files(tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(tiny(out, "train.steps=3")).train()
    rows = read_metrics(out / "metrics.jsonl")
    summary = capsys.readouterr().out
    assert "training done: 3 steps" in summary
    first, last = f"{rows[0]['reward_mean']:.4f}", f"{rows[-1]['reward_mean']:.4f}"
    assert f"reward (training batch mean): step 1 {first}, step 3 {last}" in summary
    latest = out / "checkpoints" / "step-000003"
    assert f"checkpoints: {out / 'checkpoints'} (latest step-000003)" in summary
    assert f"LoRA: {latest / 'lora'}" in summary and (latest / "lora").is_dir()
    assert f"log: {out / 'metrics.jsonl'}" in summary
    assert f"rlr-video render {out / 'config.yaml'} --lora {latest}" in summary


def test_every_file_of_a_run_follows_the_umask(tmp_path):
    """The weights too (safetensors alone writes 0600): the run's files get what open() gives."""
    previous = os.umask(0o027)  # not the usual 022, so neither 0600 nor 0644 passes by chance
    try:
        Trainer(tiny(tmp_path / "run", "train.steps=1")).train()
    finally:
        os.umask(previous)
    files = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert f"run/checkpoints/step-000001/lora/{TRAINABLE_FILE}" in files
    assert files == dict.fromkeys(files, 0o640)


def test_the_command_trains_a_custom_reward_and_says_what_stops_it(tmp_path, reward_module, monkeypatch, capsys):
    reward_module(
        "train_rewards",
        "from rewards import register_reward\n\n"
        "@register_reward('mean_green', needs_prompts=False)\n"
        "def mean_green(frames, prompts):\n"
        "    return frames[:, :, 1].mean(dim=(1, 2, 3))\n",
    )
    out = tmp_path / "run"
    argv = ["train", "toy", "--import", "train_rewards", "reward=mean_green", "train.steps=1", "train.progress=false"]
    argv.append(f"train.output_dir={out}")
    assert cli.main(argv) == 0
    assert 0 < read_metrics(out / "metrics.jsonl")[0]["reward_mean"] < 1
    capsys.readouterr()
    assert cli.main([*argv, "--resume"]) == 0  # nothing left to do: said so
    assert "already at step 1 of train.steps=1" in capsys.readouterr().out
    missing = ["train", "toy", "model.toy=null", f"model.path={tmp_path / 'no-model'}", f"train.output_dir={out}2"]
    assert cli.main(missing) == 2
    assert "no-model" in capsys.readouterr().err
    # what `accelerate launch --cpu --num_processes 2` leaves without mpirun: one process
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    for key in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert cli.main(["train", "toy", f"train.output_dir={out}3"]) == 2
    assert "started a single process" in capsys.readouterr().err


def test_resume_names_its_checkpoint_and_the_printed_render_command_runs_as_printed(tmp_path, reward_module, capsys):
    from rewards import registry

    reward_module(
        "preview_rewards",
        "from rewards import register_reward\n\n"
        "@register_reward('mean_red', needs_prompts=False)\n"
        "def mean_red(frames, prompts):\n"
        "    return frames[:, :, 0].mean(dim=(1, 2, 3))\n",
    )
    out = tmp_path / "my run"  # a space: the printed command must quote it
    argv = ["train", "toy", "--import", "preview_rewards", "reward=mean_red", "train.progress=false"]
    argv.append(f"train.output_dir={out}")
    assert cli.main([*argv, "train.steps=1"]) == 0
    capsys.readouterr()
    assert cli.main([*argv, "train.steps=2", "--resume"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"resuming from {out / 'checkpoints' / 'step-000001'} (step 1)"
    [preview] = [line.split("preview: ", 1)[1] for line in printed if "preview: " in line]
    words = shlex.split(preview)
    assert words[:3] == ["rlr-video", "render", str(out / "config.yaml")] and "--import" in words
    # As in a new shell: the reward is unknown until the command's own --import registers it.
    del registry._REGISTRY["mean_red"]
    del sys.modules["preview_rewards"]
    assert cli.main(words[1:]) == 0
    assert (out / "render" / "index.html").is_file()


def test_composite_reward_logs_every_term_and_multiscale_prompts_train(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"coarse": "a shape", "mid": "a red shape", "fine": "a red circle"}\n{"prompt": "a blue square"}\n'
    )
    out = tmp_path / "run"
    config = tiny(
        out,
        "train.steps=2",
        "reward={color_match: 1.0, brightness: 0.5}",
        f"prompts.path={prompts}",
        "prompts.ho_stage=coarse",
    )
    trainer = Trainer(config)
    assert trainer.estimator.start.mode == (7, 9)  # j restricted to the coarse third of 10 steps
    records = trainer.train()
    assert all({"reward/color_match", "reward/brightness"} <= set(r) for r in records)
    assert all(7 <= r["j"] <= 9 for r in records)


def test_bf16_mixed_precision_runs(tmp_path):
    # A separate process: accelerate cannot switch mixed precision within one process. The toy
    # preset: the point is the trainer's autocast, and bf16 diffusers models train in the FSDP
    # plugin test; tiny-shapes took 36 s here and 263 s on a CPU without native bf16 (5 minutes
    # with oneDNN limited to AVX2 on a busy machine), the toy 15 s either way, mostly start-up.
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlr_video", "train", "toy", "train.steps=2", f"train.output_dir={out}"]
    cmd += ["train.mixed_precision=bf16", "train.progress=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    rows = read_metrics(out / "metrics.jsonl")
    assert len(rows) == 2 and all(r["grad_norm"] == r["grad_norm"] for r in rows)
    # The same run in float32: bf16 autocast changed the numbers (so it was on), by about bf16's
    # precision: 2^-8 relative per rounding, independent roundings in each of the toy's layers and
    # chain steps adding like a random walk (2e-2; measured 1.4e-3 on the gradient norm).
    config = load_config("toy", ["train.steps=2", f"train.output_dir={tmp_path / 'fp32'}", "train.progress=false"])
    trainer = Trainer(config)
    depth = trainer.model.num_steps * layers(trainer.model.denoiser)[0]
    rtol = depth**0.5 * torch.finfo(torch.bfloat16).eps / 2
    for bf16, fp32 in zip(rows, trainer.train(), strict=True):
        assert bf16["grad_norm"] != fp32["grad_norm"]
        assert bf16["grad_norm"] == pytest.approx(fp32["grad_norm"], rel=rtol)


@pytest.mark.parametrize(
    "overrides",
    [
        ["estimator.name=full_bp"],
        ["estimator.name=truncated_bp", "estimator.K=2", "estimator.randomized=true"],
        ["estimator.name=lr"],
        ["estimator.zo=param_es"],
        ["estimator.zo=none", "train.grad_accum=2", "optim.max_grad_norm=null"],
        ["estimator.name=grpo", "train.group_size=2", "estimator.sde_window_size=2"],
        ["estimator.name=nft", "train.group_size=2", "train.grad_accum=2"],
    ],
    ids=["full_bp", "truncated_bp", "lr", "rlr-param_es", "rlr-no_zo-accum", "grpo-window", "nft-accum"],
)
def test_every_estimator_trains(tmp_path, overrides):
    records = Trainer(tiny(tmp_path / "run", "train.steps=2", *overrides)).train()
    assert [r["skipped"] for r in records] == [0.0, 0.0]
    assert all(r["grad_norm"] > 0 for r in records)


def test_group_sampling_draws_each_prompt_group_size_times(tmp_path):
    config = tiny(tmp_path / "run", "train.batch_size=4", "train.group_size=2", "estimator.baseline=group")
    trainer = Trainer(config)
    prompts = trainer._micro_batch(0)["prompts"]
    assert len(prompts) == 4 and prompts[0] == prompts[1] and prompts[2] == prompts[3]
    assert trainer.train_step()["grad_norm"] > 0
    from rlr_video.config import ConfigError

    with pytest.raises(ConfigError, match="train.group_size"):
        tiny(tmp_path / "bad", "train.batch_size=4", "train.group_size=3")
    with pytest.raises(ConfigError, match="estimator.baseline"):
        tiny(tmp_path / "bad", "estimator.baseline=group")


@pytest.mark.parametrize(
    "overrides",
    [
        ["estimator.name=lr", "estimator.ppo_clip=0.2", "estimator.inner_epochs=2"],  # a batch kept for reuse
        ["estimator.baseline=running", "estimator.j=grad_norm"],  # running statistics
        # a batch kept for 3 inner epochs: step 1 resumes with two reuses left, its old log-probs
        # and its random subset of steps
        ["estimator.name=grpo", "estimator.inner_epochs=3", "estimator.timestep_order=random", "train.group_size=2"],
        ["estimator.name=nft", "train.group_size=2"],  # the EMA old policy and its call count
    ],
    ids=["lr-ppo", "rlr-running-grad_norm", "grpo-inner-epochs", "nft-ema"],
)
def test_resume_restores_estimator_state(tmp_path, overrides):
    out = tmp_path / "run"
    config = tiny(out, "train.steps=4", "train.checkpoint_every=1", "train.keep_last=4", *overrides)
    Trainer(config).train()
    expected, metrics = final_weights(out), stable_metrics(out)
    Trainer(config, resume=ckpt.checkpoint_root(out) / "step-000001").train()  # mid PPO reuse cycle
    for name, tensor in expected.items():
        assert torch.equal(final_weights(out)[name], tensor), name
    assert stable_metrics(out) == metrics


class Payload:
    """Stands for code a foreign checkpoint could smuggle in: unpickling it must be refused."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_resume_reads_no_arbitrary_pickle_and_names_corrupt_files(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "toy", "train.steps=1", "train.progress=false", f"train.output_dir={out}"]
    assert cli.main(argv) == 0
    step = ckpt.checkpoint_root(out) / "step-000001"
    state = torch.load(step / ckpt.STATE_FILE, weights_only=True)  # the file itself needs no pickle classes
    torch.save({**state, "payload": Payload()}, step / ckpt.STATE_FILE)
    capsys.readouterr()
    assert cli.main([*argv, "train.steps=2", "--resume"]) == 2
    captured = capsys.readouterr()
    assert "this ran while loading" not in captured.out
    assert f"{step / ckpt.STATE_FILE}: not a resume state" in captured.err
    assert "GLOBAL print was not an allowed global" in captured.err
    torch.save(state, step / ckpt.STATE_FILE)
    (step / "lora" / TRAINABLE_FILE).write_bytes(b"garbage")
    assert cli.main([*argv, "train.steps=2", "--resume"]) == 2
    assert f"{step / 'lora' / TRAINABLE_FILE}: not a readable safetensors file" in capsys.readouterr().err


def test_a_diffusers_backbone_trains_and_checkpoints_its_lora(tmp_path):
    """``model.path`` goes through ``load_backbone``: a tiny random UNet3D (real diffusers
    classes) trains a step and its checkpoint holds the LoRA in the diffusers layout."""
    from backbone_fixtures import build_tiny_modelscope

    from rlr_video.backbones import load_backbone
    from rlr_video.train.model import load_weights

    path = build_tiny_modelscope(tmp_path / "tiny-ms")
    model = ["model.toy=null", f"model.path={path}", "model.num_steps=4", "model.height=16", "model.width=16"]
    model += ["model.frames=4", "model.lora_rank=4", "estimator.zo_samples=1", "optim.lr=1e-2"]
    trainer = Trainer(tiny(tmp_path / "run", "train.steps=1", *model))
    records = trainer.train()
    assert records[0]["skipped"] == 0.0 and records[0]["grad_norm"] > 0
    saved = ckpt.latest_checkpoint(tmp_path / "run") / ckpt.WEIGHTS_DIR
    assert (saved / "pytorch_lora_weights.safetensors").is_file()
    fresh = load_backbone(path, num_steps=4, height=16, width=16, num_frames=4, lora_rank=4)
    load_weights(fresh, saved)
    for a, b in zip(fresh.trainable_parameters(), trainer.params, strict=True):
        assert torch.equal(a, b)


def test_metrics_go_to_tensorboard_when_asked(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    Trainer(tiny(out, "train.log_with=[tensorboard]")).train()
    logged = read_metrics(out / "metrics.jsonl")
    runs = {p.parent for p in out.rglob("events.out.tfevents.*")}
    scalars = {}
    for run in runs:
        events = EventAccumulator(str(run))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in events.Scalars(tag)]
    # TensorBoard stores float32: the logged float64 rounded once, within eps/2 relative
    assert [v for _, v in scalars["reward_mean"]] == pytest.approx([r["reward_mean"] for r in logged], rel=EPS)
    assert [s for s, _ in scalars["reward_mean"]] == [r["step"] for r in logged]
