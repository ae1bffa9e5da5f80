"""``rlr-video [COMMAND] --help`` reads as plain text: the module docstrings it shows lose their
RST marks and nothing else."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

from rlr_video.cli import COMMANDS, main

BUILT = [c for c in COMMANDS if importlib.util.find_spec(f"rlr_video.commands.{c}")]  # as build_parser skips


@pytest.mark.parametrize("command", ["", *BUILT])
def test_help_has_no_rst_marks_and_keeps_the_docstring(command, capsys) -> None:
    doc = importlib.import_module(f"rlr_video.commands.{command}" if command else "rlr_video.cli").__doc__
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"] if command else ["--help"])
    assert exit.value.code == 0
    shown = capsys.readouterr().out
    assert "``" not in shown and ":func:`" not in shown and ":class:`" not in shown, shown
    assert "``" in doc  # the docstring is RST, so this test would see an unconverted mark
    # every word of the docstring is there, with ``x`` shown as `x` (argparse may re-wrap lines)
    assert " ".join(doc.replace("``", "`").split()) in " ".join(shown.split())
