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
    """Raise ValueError, naming the device, if torch cannot use it here (``None``: the default)."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device!r}: {err}") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise ValueError(f"--device {device!r}: torch sees {count} CUDA GPU(s) on this machine")
