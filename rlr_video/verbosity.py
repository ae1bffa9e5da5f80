"""Library noise: quiet by default on the command line, shown with ``rlr-video --verbose``.

Used as a library (``load_backbone``, ``build_reward``, tools such as ``tools/demo_report.py``),
rlr-video leaves the libraries' log settings alone but hides the progress bars of the model
loads it makes itself (:func:`loading_bars_hidden`); ``set_verbose(True)`` shows them.

The noise is transformers' and diffusers' log messages and progress bars (transformers'
"Loading weights" bar), open_clip's messages on the root logger (``ERROR:root:Failed to
download weights ...``, which our own error then explains) and decord's ``ERROR opening``
lines, which its C++ code writes straight to file descriptor 2. What matters reaches the user
through our own messages anyway: a video that cannot be read is reported by name with every
decoder's reason, missing weights by a one-line error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

_verbose = False


def set_verbose(verbose: bool) -> None:
    """Let the libraries' logs and progress bars through (``True``) or keep them quiet.

    transformers is set through its API (its logging module imports in under a second, and
    every command that loads a model imports it anyway); diffusers, whose import takes
    seconds, through ``DIFFUSERS_VERBOSITY`` unless it is already imported. Download progress
    bars (huggingface_hub's) stay. Errors from transformers and diffusers always show.
    """
    global _verbose
    _verbose = verbose
    import transformers.utils.logging  # noqa: F401  (registers it in sys.modules)

    for library in ("transformers", "diffusers"):
        os.environ[f"{library.upper()}_VERBOSITY"] = "warning" if verbose else "error"
        module = sys.modules.get(f"{library}.utils.logging")
        if module is None:
            continue
        module.set_verbosity(logging.WARNING if verbose else logging.ERROR)
        if verbose:
            module.enable_progress_bar()
        else:
            module.disable_progress_bar()
    root = logging.getLogger()
    if not any(isinstance(f, _OpenClipFilter) for f in root.filters):
        root.addFilter(_OpenClipFilter())


@contextlib.contextmanager
def loading_bars_hidden() -> Iterator[None]:
    """Hide transformers' ("Loading weights") and diffusers' ("Loading pipeline components")
    progress bars for the block, unless verbose; each library's own setting is restored after.

    transformers is imported for this (its logging module is light); diffusers only if it is
    imported already, as it is wherever one of its models loads.
    """
    if _verbose:
        yield
        return
    import transformers.utils.logging  # noqa: F401  (registers it in sys.modules)

    libraries = [sys.modules.get(f"{name}.utils.logging") for name in ("transformers", "diffusers")]
    hidden = [lib for lib in libraries if lib is not None and lib.is_progress_bar_enabled()]
    for lib in hidden:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in hidden:
            lib.enable_progress_bar()


class _OpenClipFilter(logging.Filter):
    """open_clip logs through the root logger itself, so its records are told apart by file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _verbose or f"{os.sep}open_clip{os.sep}" not in record.pathname


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block, unless verbose: for C++ libraries
    (decord) that print there directly. Python's own ``sys.stderr`` writes are flushed first;
    anything written to the descriptor during the block is lost, so keep the block short."""
    if _verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
