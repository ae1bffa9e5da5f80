"""The README, docs/ and the commands recorded in benchmarks/*.json name files that exist: tool
scripts (moved under tools/testbed/ once), and the relative links between the documents."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOOL_PATH = re.compile(r"\btools/[\w/]+\.py\b")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_named_tool_script_exists() -> None:
    sources = [*DOCUMENTS, *sorted((ROOT / "benchmarks").glob("*.json"))]
    named = {(src.name, m) for src in sources for m in TOOL_PATH.findall(src.read_text(encoding="utf-8"))}
    assert len(named) > 10  # the pattern still matches what the documents write
    missing = sorted((src, path) for src, path in named if not (ROOT / path).is_file())
    assert not missing, missing


def test_relative_links_between_documents_resolve() -> None:
    broken = []
    for doc in DOCUMENTS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append((doc.name, target))
    assert not broken, broken


def test_tools_holds_the_benchmarks_and_the_testbed_scripts_their_folder() -> None:
    top = sorted(p.name for p in (ROOT / "tools").glob("*.py"))
    scripts = ("demo_report.py", "gpu_figures.py")  # the demo's page; the one-call GPU script
    assert all(name.startswith("bench_") or name in scripts for name in top), top
    assert (ROOT / "tools" / "testbed" / "pretrain_tiny_shapes.py").is_file()
