"""One module per ``rlr-video`` sub-command; each offers ``add_parser(subparsers)``.

``add_parser`` registers the sub-command and sets ``func`` (taking the parsed args, returning
an exit code) as the parser default. Heavy imports belong inside ``func`` so that
``rlr-video --help`` and config validation stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def add_import_option(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE`` (repeatable): modules that register custom rewards."""
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (to register custom rewards); repeatable",
    )


def import_modules(modules: list[str]) -> None:
    """Import ``modules`` as ``python -m`` would find them: the working directory comes first
    on ``sys.path`` (a console script does not put it there). Raises ImportError naming the
    module that failed."""
    if modules and "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(f"--import {module}: {err}") from err


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return value


def check_device(device: str | None) -> None:
    """Raise ValueError, naming ``--device``, if torch cannot use it here (``None``: the default)."""
    if device is not None:
        from rlr_video.backbones.options import check_device as check

        check(device, "--device")
