"""A trimmed CLIP BPE vocabulary for the testbed's text encoders.

The tokenizers are OpenAI CLIP's byte-level BPE, read from the BPE file that
open_clip ships (``open_clip/bpe_simple_vocab_16e6.txt.gz``), trimmed to what the
testbed's captions need so the embedding tables stay tiny (49,408 rows x 64 floats
would be 12 MB alone). The trimmed vocabulary keeps

* all 512 byte symbols (plain and end-of-word), so any text still tokenizes;
* exactly the merges that BPE applies to the caption words, in their original order;
* the two specials, last, as in CLIP.

BPE applies, at every step, the lowest-ranked merge among the pairs present. Each merge
that the full vocabulary applies to a caption word is kept, and removing merges that were
never applied cannot change which kept merge has the lowest rank, so caption words split
into exactly the same pieces as with the full vocabulary (only the ids are renumbered).
Words outside the captions fall back to smaller pieces; they are still valid tokens.

The same merges are written twice: ``vocab.json`` + ``merges.txt`` for transformers'
``CLIPTokenizer`` (the diffusers model) and a gzipped BPE file for open_clip's
``SimpleTokenizer`` (the shapes CLIP). Both number tokens identically.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from open_clip.tokenizer import bytes_to_unicode, default_bpe

BPE_HEADER = "#version: 0.2"
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


@lru_cache(maxsize=1)
def _full_merges() -> list[tuple[str, str]]:
    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    # Same slice as open_clip's SimpleTokenizer: the header line, then 48,894 merges.
    return [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]


def _applied_merges(word: str, ranks: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    """The merges BPE applies to ``word`` (already byte-encoded), in order."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    used = []
    while len(symbols) > 1:
        pairs = {(a, b) for a, b in zip(symbols, symbols[1:], strict=False)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        used.append(best)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return used


def trimmed_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """The merges of CLIP's BPE needed for ``words``, in their original rank order."""
    merges = _full_merges()
    ranks = {m: i for i, m in enumerate(merges)}
    byte_encoder = bytes_to_unicode()
    needed: set[tuple[str, str]] = set()
    for word in words:
        encoded = "".join(byte_encoder[b] for b in word.lower().encode("utf-8"))
        needed.update(_applied_merges(encoded, ranks))
    return [m for m in merges if m in needed]


def vocab_from_merges(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary layout: bytes, bytes + end-of-word, merges, then the specials."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += [SOT, EOT]
    return {t: i for i, t in enumerate(tokens)}


def write_clip_tokenizer_files(words: Iterable[str], folder: str | Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` for transformers' ``CLIPTokenizer``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = trimmed_merges(words)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab_from_merges(merges), ensure_ascii=False))
    merges_path.write_text("\n".join([BPE_HEADER] + [" ".join(m) for m in merges]) + "\n")
    return vocab_path, merges_path


def write_open_clip_bpe(words: Iterable[str], path: str | Path) -> Path:
    """Write a gzipped BPE file in open_clip's format (``SimpleTokenizer(bpe_path=...)``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [BPE_HEADER] + [" ".join(m) for m in trimmed_merges(words)]
    # mtime=0 keeps the file byte-identical across runs (no spurious diffs in git).
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write("\n".join(lines).encode("utf-8"))
    return path
