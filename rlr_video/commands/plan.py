"""``rlr-video plan [CONFIG] [key=value ...] --budget 24GiB``: the memory plan, without training.

Prints the setting the trainer would use with ``memory.budget`` (h, checkpoint granularity,
frame chunks, ZO mode), the predicted peak per phase and the fixed cost, one denoiser call's
activations by component (spatial / temporal attention, convolutions, feed-forward), the
temporal attention share, the recompute time multiplier and why each choice was made.

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
import warnings

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
    sharding = args.sharding or config.train.sharding
    if config.estimator.name != "rlr":
        print("rlr-video plan: the planner chooses RLR's h; set estimator.name=rlr", file=sys.stderr)
        return 2
    try:
        plan = make_plan(config, budget, args.device, args.attention, args.probe, args.processes, sharding)
    except Exception as err:  # noqa: BLE001 - a missing model, a budget too small: say it plainly
        from rlr_video.backbones.layout import BackboneLoadError
        from rlr_video.memory.planner import BudgetTooSmall

        if isinstance(err, BudgetTooSmall):  # exit 1, as `train` with the same memory.budget
            print(f"rlr-video plan: {err}", file=sys.stderr)
            return 1
        if isinstance(err, BackboneLoadError | FileNotFoundError | ValueError):  # exit 2, as `train`
            print(f"rlr-video plan: {err}", file=sys.stderr)
            if isinstance(err, BackboneLoadError) and "hf download" in str(err) and not args.probe:
                # the plan reads no weights: the configs and the tokenizer are a few MB
                repo = config.model.path
                print(f"  (plan needs only: hf download {repo} --include '*.json' 'tokenizer/*')", file=sys.stderr)
            return 2
        raise
    print(plan.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(plan.as_dict(), f, indent=2)
    return 0


def make_plan(
    config,
    budget,
    device: str | None,
    attention: str | None,
    probe: bool,
    processes: int = 1,
    sharding: str = "none",
):
    import torch

    from rlr_video.memory.cost_model import CostModel, reward_stubs
    from rlr_video.memory.planner import Planner
    from rlr_video.train.model import backbone_options, build_backbone

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    m, e, mem = config.model, config.estimator, config.memory
    if probe or m.toy is not None:
        backbone = build_backbone(m, device if probe else "cpu")
        reward = _load_reward(config.reward) if probe else None
    else:
        from rlr_video.memory.meta import meta_backbone

        options = backbone_options(m, "meta")
        backbone = meta_backbone(m.path, family=m.family, **options)
        backbone.options.lora_rank = m.lora_rank  # costed, not injected
        _note_shipped_configs(m.path, backbone.source)
        reward = None
    if reward is None:
        itemsize = 2 if m.dtype in ("bfloat16", "float16") or config.train.mixed_precision == "bf16" else 4
        reward = _RewardMix(reward_stubs(config.reward, itemsize))
    cost_model = CostModel(backbone, reward, device=device, attention=attention, processes=processes, sharding=sharding)
    if probe:
        from rlr_video.memory.probe import calibrate

        calibrate(cost_model, batch=config.train.batch_size, device=device)
    planner = Planner(cost_model, config.train.batch_size, e.fo_steps, e.zo, e.zo_samples, mem.max_h)
    modes = ("none", "block", "call") if mem.checkpoint == "auto" else (mem.checkpoint,)
    return planner.plan(budget, modes=modes, chunk=mem.frame_chunk)


def _note_shipped_configs(path: str, source: str | None) -> None:
    from pathlib import Path

    from rlr_video.backbones.hub_configs import is_shipped

    if source is not None and is_shipped(Path(source)):
        note = "not in the Hugging Face cache: planned from its config files shipped with rlr-video"
        print(f"rlr-video plan: {path} is {note} (rlr_video/assets/hub-configs)", file=sys.stderr)


class _RewardMix:
    """Reward stubs as one reward (the cost model sums its terms)."""

    def __init__(self, stubs):
        self.terms = [(1.0, s) for s in stubs]


def _load_reward(spec):
    from rewards import build_reward

    try:
        return build_reward(spec)
    except Exception as err:  # noqa: BLE001 - missing reward weights: cost it by name
        warnings.warn(f"reward not loaded ({err}); costed from its default vision tower", stacklevel=2)
        return None
