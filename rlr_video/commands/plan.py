"""``rlr-video plan [CONFIG] [key=value ...] --budget 24GiB``: the memory plan, without training.

Prints the setting the trainer would use with ``memory.budget`` (h, checkpoint granularity,
frame chunks, ZO mode; an estimator whose config declares its update's workload keeps its own
settings and gets the checkpointing and frame chunks for that update), the predicted peak per
phase and the fixed cost, one denoiser call's activations by component (spatial / temporal
attention, convolutions, feed-forward), the temporal attention share, the recompute time
multiplier and why each choice was made.

The model is built on the meta device from its config files (``unet/config.json`` ...; no
weights are read), so a hub id only needs its configs and tokenizer in the cache; the shipped
presets' hub ids need neither, their config files ship with the package. The
reward is costed by name from its default vision tower unless its weights load.
``--probe`` loads the real weights and calibrates the prediction with one measured call.
``--processes N --sharding fsdp`` plans per process for N training processes with the
denoiser's frozen weights sharded over them (``train.sharding``): 1/N of each block, the
root's own weights and two gathered blocks; LoRA, its AdamW state and activations per
process as with one process.
"""

from __future__ import annotations

import argparse
import json
import sys

from rlr_video.commands import add_import_option, check_device


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="predict memory and choose h, checkpointing and frame chunks for a budget",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("args", nargs="*", metavar="CONFIG | key=value", help="a YAML file or preset, then overrides")
    parser.add_argument("--budget", default=None, help="bytes, a size (24GiB, 40GB) or 'auto' (default: memory.budget)")
    parser.add_argument("--device", default=None, help="where training will run (default: cuda if present, else cpu)")
    parser.add_argument(
        "--attention",
        default=None,
        choices=["math", "flash", "efficient", "cudnn", "xformers"],
        help="the attention kernel to assume (default: what SDPA picks on the device)",
    )
    parser.add_argument("--processes", type=int, default=1, metavar="N", help="training processes (default: 1)")
    parser.add_argument(
        "--sharding", default=None, choices=["none", "fsdp"], help="shard the denoiser (default: train.sharding)"
    )
    parser.add_argument("--probe", action="store_true", help="load the weights and calibrate with one measured call")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the plan as JSON")
    add_import_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlr_video.commands.train import split_args
    from rlr_video.config import ConfigError, load_config

    config_name, overrides = split_args(args.args)
    try:
        config = load_config(config_name, overrides)
    except ConfigError as err:
        print(f"rlr-video plan: {err}", file=sys.stderr)
        return 2
    budget = args.budget if args.budget is not None else config.memory.budget
    if budget is None:
        print("rlr-video plan: give --budget (e.g. --budget 24GiB) or set memory.budget", file=sys.stderr)
        return 2
    from rlr_video.memory.budget import FORMAT, parse_size

    try:
        parse_size(budget)
    except ValueError:
        print(f"rlr-video plan: --budget {budget!r}: expected {FORMAT}", file=sys.stderr)
        return 2
    try:
        check_device(args.device)
    except ValueError as err:
        print(f"rlr-video plan: {err}", file=sys.stderr)
        return 2
    if args.processes < 1:
        print(f"rlr-video plan: --processes {args.processes}: expected 1 or more", file=sys.stderr)
        return 2
    from rlr_video.config import run_context

    if not config.estimator.planned and config.estimator.workload(run_context(config)) is None:
        name = config.estimator.name
        print(
            f"rlr-video plan: estimator.name={name} declares no workload to cost",
            file=sys.stderr,
        )
        return 2
    import torch

    from rlr_video.train.components import build_components

    config.memory.probe = config.memory.probe or args.probe
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parts = build_components(
            config,
            device,
            meta=True,
            budget=budget,
            processes=args.processes,
            sharding=args.sharding,
            attention=args.attention,
        )
        plan = parts.plan
        _note_shipped_configs(config.model.path, getattr(parts.backbone, "source", None))
    except Exception as err:  # noqa: BLE001 - a missing model, a budget too small: say it plainly
        from rlr_video.backbones.layout import BackboneLoadError
        from rlr_video.memory.planner import BudgetTooSmall

        if isinstance(err, BudgetTooSmall):  # exit 1, as `train` with the same memory.budget
            print(f"rlr-video plan: {err}", file=sys.stderr)
            return 1
        if isinstance(err, BackboneLoadError | FileNotFoundError | ValueError):  # exit 2, as `train`
            print(f"rlr-video plan: {err}", file=sys.stderr)
            if isinstance(err, BackboneLoadError) and "hf download" in str(err) and not config.memory.probe:
                # the plan reads no weights: the configs and the tokenizer are a few MB
                repo = config.model.path
                print(f"  (plan needs only: hf download {repo} --include '*.json' 'tokenizer/*')", file=sys.stderr)
            return 2
        raise
    from rlr_video.memory.report import plan_table

    print(plan_table(plan))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(plan.as_dict(), f, indent=2)
    return 0


def _note_shipped_configs(path: str | None, source: str | None) -> None:
    from pathlib import Path

    from rlr_video.backbones.hub_configs import is_shipped

    if path is not None and source is not None and is_shipped(Path(source)):
        note = "not in the Hugging Face cache: planned from its config files shipped with rlr-video"
        print(f"rlr-video plan: {path} is {note} (rlr_video/assets/hub-configs)", file=sys.stderr)
