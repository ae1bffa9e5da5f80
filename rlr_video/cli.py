"""The ``rlr-video`` command line: ``rlr-video {train,reward,render,plan} ...``."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings

# Sub-command modules under rlr_video.commands, in the order --help lists them.
COMMANDS = ["train", "reward", "render", "plan"]
VERBOSE_HELP = "show the libraries' own logs and progress bars (transformers, diffusers, open_clip, decord)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlr-video", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"rlr_video.commands.{name}").add_parser(sub)
    # before or after the sub-command; SUPPRESS keeps a sub-command from resetting the main's value
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    for command in (parser, *sub.choices.values()):
        _plain_help(command)
    return parser


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Module docstrings double as --help text: their RST marks (``x``, :func:`x`) become the
    single backticks that our messages put around commands and names."""
    parser.description = _plain(parser.description)
    parser.epilog = _plain(parser.epilog)
    for action in parser._actions:
        action.help = _plain(action.help)


def _plain(text: str | None) -> str | None:
    if not isinstance(text, str):
        return text
    return re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", text).replace("``", "`")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"rlr-video: warning: {message}\n"  # users need the message, not our source line


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    # parse_known_args, then give leftover words to the sub-command's positional list, so that
    # `train toy --print-config steps=3` and `reward a.mp4 -r clip b.mp4` work (argparse's own
    # parse_intermixed_args does not support sub-commands).
    args, extra = parser.parse_known_args(argv)
    rest = next((name for name in ("args", "videos") if isinstance(getattr(args, name, None), list)), None)
    if extra:
        if rest is None or any(word.startswith("-") for word in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        getattr(args, rest).extend(extra)
    from rlr_video.verbosity import set_verbose

    set_verbose(args.verbose)
    if getattr(args, "no_progress", False):
        from transformers.utils import logging

        logging.disable_progress_bar()  # its "Loading weights" bar
    if getattr(args, "imports", None):
        from rlr_video.commands import import_modules

        try:
            import_modules(args.imports)
        except ImportError as err:
            print(f"rlr-video {args.command}: error: {err}", file=sys.stderr)
            return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
