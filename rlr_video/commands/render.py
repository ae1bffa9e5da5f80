"""``rlr-video render [CONFIG] [key=value ...] --prompts FILE [--lora DIR ...] [--out DIR]``.

Renders every prompt with the base model and with each LoRA (a checkpoint folder or its
``lora/`` folder), from the same seed per prompt, to mp4 + gif, a contact sheet per prompt
and a static ``index.html`` gallery with each video's reward scores.
"""

from __future__ import annotations

import argparse
import sys

from rlr_video.commands import add_import_option, positive_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render preview videos, contact sheets and an HTML gallery",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("args", nargs="*", metavar="CONFIG | key=value", help="a YAML file or preset, then overrides")
    parser.add_argument("--prompts", help="a .txt or .jsonl prompt file (default: the config's prompts)")
    parser.add_argument(
        "--lora", nargs="+", action="extend", default=[], metavar="DIR", help="checkpoint or LoRA folders to compare"
    )
    parser.add_argument("--out", help="output folder (default: render.output_dir or <train.output_dir>/render)")
    parser.add_argument("--limit", type=positive_int, help="render only the first N prompts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_import_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlr_video.commands.train import split_args
    from rlr_video.config import ConfigError, load_config
    from rlr_video.prompts import PromptError, config_prompts, load_prompts

    config_name, overrides = split_args(args.args)
    try:
        config = load_config(config_name, overrides)
        prompts = load_prompts(args.prompts) if args.prompts else None
    except (ConfigError, PromptError) as err:
        print(f"rlr-video render: {err}", file=sys.stderr)
        return 2
    if prompts is None:
        prompts = config_prompts(config.prompts)
    if args.limit is not None:
        prompts = prompts[: args.limit]
    for lora in args.lora:
        if not Path(lora).is_dir():
            print(f"rlr-video render: --lora {lora}: no such folder", file=sys.stderr)
            return 2
    from rlr_video.backbones.layout import BackboneLoadError
    from rlr_video.render import render

    try:
        index = render(config, prompts, args.lora, args.out, progress=not args.no_progress)
    except (BackboneLoadError, FileNotFoundError, ValueError) as err:  # a missing model, a foreign LoRA
        print(f"rlr-video render: {err}", file=sys.stderr)
        return 2
    print(index)
    return 0
