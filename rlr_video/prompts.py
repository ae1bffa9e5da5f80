"""Prompts: reading them, the deterministic prompt stream, and multi-scale prompts.

A multi-scale prompt is three texts (coarse, mid, fine); each conditions its third of the
denoising steps, coarse the noisiest (``MultiScaleBackbone``). It travels through estimators
and rewards as one string, the three parts joined by newlines (prompts never contain one),
so estimators and rewards need not know about it; rewards see the fine part only.

The stream is a pure function of (seed, position): item k of the endless sequence of shuffled
epochs. A micro-batch takes the items at its global position, whichever process runs it, so
runs with different process counts see the same prompts and a resumed run continues exactly.

A leaf module: it imports no torch and nothing of the library, so every layer can use it.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

# The thirds of a multi-scale prompt, noisiest first (``prompts.ho_stage`` names one).
STAGES = ("coarse", "mid", "fine")
MultiScalePrompt = tuple[str, str, str]
Prompt = str | MultiScalePrompt
SEPARATOR = "\n"
PROMPT_FILE_TYPES = (".txt", ".jsonl", ".csv")
PROMPT_FILE_TYPES_TEXT = ".txt (one prompt per line), .jsonl or .csv"


class PromptError(ValueError):
    """A prompt file that cannot be read; the message names the file and line."""


def load_prompts(path: str | Path) -> list[Prompt]:
    """Prompts from a ``.txt`` (one per line, ``#`` comments), ``.jsonl`` or ``.csv`` file.

    JSONL lines are ``{"prompt": "..."}`` or ``{"coarse": ..., "mid": ..., "fine": ...}``; a CSV
    has a header row naming a ``prompt`` column, or ``coarse``, ``mid`` and ``fine`` columns.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise PromptError(f"no prompt file at {path}")
    if suffix not in PROMPT_FILE_TYPES:
        raise PromptError(f"{path}: prompt files are {PROMPT_FILE_TYPES_TEXT}, not '{suffix or path.name}'")
    if suffix == ".csv":
        prompts = _load_csv(path)
    elif suffix == ".jsonl":
        prompts = [_parse_jsonl_line(line, f"{path}:{number}") for number, line in _lines(path, comments=False)]
    else:
        prompts = text_prompts(path)
    if not prompts:
        raise PromptError(f"{path} holds no prompts")
    return prompts


def text_prompts(path: Path) -> list[str]:
    """One prompt per line of a text file, stripped; blank lines and ``#`` comments skipped."""
    return [line for _, line in _lines(path, comments=True)]


def _lines(path: Path, comments: bool) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines (and non-``#`` ones with ``comments``)."""
    rows = enumerate((line.strip() for line in path.read_text(encoding="utf-8").splitlines()), start=1)
    return [(n, line) for n, line in rows if line and not (comments and line.startswith("#"))]


def _load_csv(path: Path) -> list[Prompt]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames or []
    if "prompt" not in columns and not all(s in columns for s in STAGES):
        wanted = f"a 'prompt' column (or {', '.join(STAGES)})"
        raise PromptError(f"{path}: a CSV needs a header row with {wanted}; its header is {columns}")
    prompts = [_parse_row(row, f"{path}:{n}") for n, row in enumerate(rows, start=2)]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise PromptError(f"{path} holds no prompts")
    return prompts


def config_prompts(prompts_config) -> list[Prompt]:
    """The prompts a config's ``prompts`` section names: its file, else its inline ``items``."""
    if prompts_config.path:
        return load_prompts(prompts_config.path)
    return list(prompts_config.items)


def _parse_jsonl_line(line: str, where: str) -> Prompt:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise PromptError(f"{where}: not JSON ({err.msg})") from None
    return _parse_row(row, where)


def _parse_row(row: object, where: str) -> Prompt:
    """A JSONL object or CSV row: ``prompt``, or ``coarse``, ``mid`` and ``fine``."""
    if isinstance(row, dict) and isinstance(row.get("prompt"), str):
        return row["prompt"].strip()
    if isinstance(row, dict) and all(isinstance(row.get(s), str) for s in STAGES):
        parts = tuple(row[s].strip() for s in STAGES)
        if any(SEPARATOR in part for part in parts):
            raise PromptError(f"{where}: a multi-scale part contains a newline")
        return parts  # type: ignore[return-value]
    raise PromptError(f'{where}: expected {{"prompt": str}} or {{"coarse", "mid", "fine": str}}')


def encode_prompt(prompt: Prompt) -> str:
    """The single string a prompt travels as (multi-scale parts joined by newlines)."""
    return prompt if isinstance(prompt, str) else SEPARATOR.join(prompt)


def split_prompt(prompt: str) -> MultiScalePrompt | None:
    """The (coarse, mid, fine) parts of an encoded multi-scale prompt, or None for a plain one."""
    parts = prompt.split(SEPARATOR)
    return tuple(parts) if len(parts) == 3 else None  # type: ignore[return-value]


def final_prompt(prompt: str) -> str:
    """What a reward should judge: the fine part of a multi-scale prompt, else the prompt."""
    parts = split_prompt(prompt)
    return parts[2] if parts else prompt


def prompts_at(prompts: list[Prompt], position: int, count: int, seed: int, shuffle: bool) -> list[str]:
    """Encoded prompts at stream positions ``position ... position + count - 1``."""
    n = len(prompts)
    out = []
    for k in range(position, position + count):
        epoch, index = divmod(k, n)
        order = _epoch_order(n, seed, epoch) if shuffle else range(n)
        out.append(encode_prompt(prompts[order[index]]))
    return out


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}/{epoch}").shuffle(order)  # string seeds hash stably across runs
    return order


# --------------------------------------------------------------------------- step thirds


def stage_ranges(num_steps: int) -> dict[str, tuple[int, int]]:
    """Inclusive step ranges (low, high) of the coarse, mid and fine thirds of T ... 1.

    Sizes differ by at most one, the earlier (noisier) thirds taking the remainder.
    """
    sizes = [num_steps // 3 + (1 if i < num_steps % 3 else 0) for i in range(3)]
    ranges, high = {}, num_steps
    for stage, size in zip(STAGES, sizes, strict=True):
        ranges[stage] = (high - size + 1, high)
        high -= size
    return ranges


def stage_of(step: int, num_steps: int) -> int:
    """0, 1 or 2: the third (coarse, mid, fine) chain step ``step`` belongs to."""
    for i, (low, high) in enumerate(stage_ranges(num_steps).values()):
        if low <= step <= high:
            return i
    raise ValueError(f"step {step} is outside the chain 1..{num_steps}")


def stage_j_range(num_steps: int, h: int, stage: str, fo_steps: int = 1) -> tuple[int, int] | None:
    """The range [a, b] of HO starts j whose sub-chain j+h-1 ... j lies in ``stage`` (and
    above the last ``fo_steps``, which belong to FO), or None when that is too short for h."""
    low, high = stage_ranges(num_steps)[stage]
    a, b = max(low, fo_steps + 1), high - h + 1
    return (a, b) if a <= b else None
