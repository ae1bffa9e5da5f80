"""The package's imports point down the layers of DESIGN.md section 3, with no cycle.

Every ``import`` of the library (module level and inside functions alike: a lazy import is still a
dependency) is read with ``ast`` and its target's layer compared with the importer's. A module may
import its own layer (the same folder) or a lower one; ``TYPE_CHECKING`` blocks are included too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module's layer is that of its longest matching prefix.
LAYERS: list[tuple[str, ...]] = [
    # leaf modules: they import nothing of the library
    (
        "rlr_video.errors",
        "rlr_video.seeds",
        "rlr_video.prompts",
        "rlr_video.verbosity",
        "rlr_video.video_io",
        "rlr_video.file_mode",
    ),
    ("rlr_video.chain",),
    ("rlr_video.backbones",),
    ("rlr_video.memory", "rewards"),
    ("rlr_video.estimators", "rlr_video.testbed", "rlr_video.scoring"),
    ("rlr_video.config",),
    ("rlr_video.train",),
    ("rlr_video.render",),
    ("rlr_video.commands",),
    ("rlr_video.cli", "rlr_video.__main__", "rlr_video"),
]
# Two packages of one layer that must not import each other (both directions are checked).
APART = [("rlr_video.memory", "rewards"), ("rlr_video.estimators", "rlr_video.testbed")]


def layer_of(module: str) -> int:
    best, length = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    assert best is not None, f"{module} is in no layer of tests/test_layers.py: add it"
    return best


def library_modules() -> dict[str, Path]:
    found = {}
    for package in ("rlr_video", "rewards"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, module: str) -> set[str]:
    """Library modules ``path`` imports (absolute and relative), anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                base = ".".join(parent[: len(parent) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in out if m.split(".")[0] in ("rlr_video", "rewards")}


def resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The library module an import names (``from pkg import name`` may name a module or an attribute)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def test_imports_point_down_the_layers():
    modules = library_modules()
    upward: set[str] = set()
    for module, path in sorted(modules.items()):
        own = layer_of(module)
        for target in sorted(imports_of(path, module)):
            resolved = resolve(target, modules)
            if resolved is None or resolved == module or module.startswith(resolved + "."):
                continue  # a package's own __init__ seen from inside it
            if layer_of(resolved) > own:
                upward.add(f"{module} -> {resolved}")
            for a, b in APART:
                for x, y in ((a, b), (b, a)):
                    if (module == x or module.startswith(x + ".")) and (resolved == y or resolved.startswith(y + ".")):
                        upward.add(f"{module} -> {resolved} (apart)")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    modules = library_modules()
    graph = {}
    for module, path in modules.items():
        targets = {resolve(t, modules) for t in imports_of(path, module)}
        # a package's __init__ re-exporting its own submodules is no dependency cycle
        graph[module] = {t for t in targets if t and t != module and not t.startswith(module + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
