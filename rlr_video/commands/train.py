"""``rlr-video train [CONFIG] [key=value ...] [--resume [CHECKPOINT]]``.

CONFIG is a YAML file or a preset name from ``rlr_video/configs/`` (default: the CPU preset
``tiny-shapes``). Multi-GPU / multi-process: ``accelerate launch -m rlr_video train ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlr_video.commands import add_import_option


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a video model against a reward",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "args",
        nargs="*",
        metavar="CONFIG | key=value",
        help="a YAML file or preset name, then overrides such as estimator.h=3 train.steps=500",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="continue a run: from CHECKPOINT, or (no value) the latest one in train.output_dir; "
        "a key=value after it is an override, not a CHECKPOINT",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_import_option(parser)
    parser.set_defaults(func=run)


def split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """(config, overrides): the config is the first argument that is not key=value."""
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def run(args: argparse.Namespace) -> int:
    from rlr_video.config import ConfigError, load_config

    resume = args.resume
    if resume is not None and "=" in resume and not Path(resume).exists():
        # `--resume key=value`: argparse took the override for --resume's optional value.
        args.args.append(resume)
        resume = "auto"
    config_name, overrides = split_args(args.args)
    try:
        config = load_config(config_name, overrides)
    except ConfigError as err:  # before any model loads
        print(f"rlr-video train: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        from rlr_video.train.trainer import config_yaml

        print(config_yaml(config), end="")
        return 0
    from rlr_video.backbones.layout import BackboneLoadError
    from rlr_video.memory.planner import BudgetTooSmall
    from rlr_video.train import train
    from rlr_video.train.checkpoint import CheckpointError
    from rlr_video.train.trainer import LaunchError

    try:
        train(config, resume=resume, imports=args.imports)
    # A run folder in use or not writable, a bad --resume checkpoint, a model or reward weights
    # that are not there.
    except (ConfigError, FileExistsError, FileNotFoundError, BackboneLoadError, CheckpointError, LaunchError) as err:
        print(f"rlr-video train: {err}", file=sys.stderr)
        return 2
    except BudgetTooSmall as err:  # memory.budget below what even h = 1 needs
        print(f"rlr-video train: memory.budget: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: where to go on from, not a traceback
        print(f"\nrlr-video train: interrupted; {_resume_hint(config.train.output_dir)}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    finally:
        _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Destroy the process group of a multi-process run before the interpreter exits, as
    PyTorch asks: left to the exit, gloo's threads can abort a finished process
    ("terminate called without an active exception"), and the launcher reports a failure."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _resume_hint(output_dir: str) -> str:
    from rlr_video.train.checkpoint import latest_checkpoint

    last = latest_checkpoint(output_dir)
    if last is None:
        return f"no checkpoint was written to {output_dir} yet"
    return f"the last checkpoint is {last} (go on with --resume)"
