"""The ``rlr-video`` command line: ``rlr-video {train,reward,render,plan} ...``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules under rlr_video.commands, in the order --help lists them.
COMMANDS = ["train", "reward", "render", "plan", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlr-video", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"rlr_video.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"rlr_video.commands.{name}":
                raise
            continue  # not built yet
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
