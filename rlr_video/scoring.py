"""Scoring video files with rewards: what ``rlr-video reward`` and the render gallery share.

Files are read with ``rlr_video.video_io``, batched by shape and scored with reward objects of
the zoo (``rewards.build_reward``). One unreadable or failing file is recorded on its result
and the others are still scored. Prompts come from a file (``.txt`` in sorted file-name order,
``.csv`` / ``.jsonl`` / ``.json`` matched by path) or from a sidecar ``NAME.txt`` next to each
video, as ``render`` writes them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROMPT_PATH_KEYS = ("path", "video", "file", "filename")
PROMPT_TEXT_KEYS = ("prompt", "caption", "text")


class ScoringError(ValueError):
    """Rewards or prompts that cannot be used as given; the message says which and why."""


@dataclass
class VideoResult:
    path: Path
    prompt: str | None
    frames: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def reward_columns(rewards: Sequence[Any]) -> list[str]:
    """One column per reward; a composite also gets one per term, before its total."""
    names: list[str] = []
    for reward in rewards:
        parts = [r.name for _, r in reward.terms] if hasattr(reward, "score_terms") else []
        for name in [*parts, reward.name]:
            if name in names:
                raise ScoringError(f"reward {name!r} is asked for twice; label one differently")
            names.append(name)
    return names


# ---------------------------------------------------------------- files


def sort_key(path: Path) -> tuple[str, str]:
    """Sorted file-name order: the order a ``.txt`` prompt file follows."""
    return (path.name, str(path))


def one_file_per_clip(videos: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(kept, skipped): of files with the same stem in the same folder, keep one, the .mp4 if
    there is one and a .gif only when there is nothing else; the order of ``videos`` is kept."""
    clips: dict[Path, list[Path]] = {}
    for video in videos:
        clips.setdefault(video.with_suffix(""), []).append(video)
    best = {min(files, key=_format_rank) for files in clips.values()}
    return [v for v in videos if v in best], [v for v in videos if v not in best]


def _format_rank(path: Path) -> tuple[bool, bool]:
    return path.suffix.lower() == ".gif", path.suffix.lower() != ".mp4"  # mp4 first, gif last


# ---------------------------------------------------------------- prompts


def video_prompts(source: Path | None, videos: Sequence[Path]) -> dict[Path, str]:
    """Prompts per video from ``source`` (.txt in order, .csv/.jsonl/.json by path) and sidecars."""
    from rlr_video.prompts import text_prompts

    prompts: dict[Path, str] = {}
    if source is not None:
        if not source.is_file():
            raise ScoringError(f"--prompts {str(source)!r}: no such file")
        if source.suffix.lower() in (".csv", ".jsonl", ".json"):
            prompts = _match_by_path(source, _prompt_records(source), videos)
        else:
            lines = text_prompts(source)  # blank and '#' lines skipped, as in the trainer's prompt files
            if len(lines) != len(videos):
                raise ScoringError(
                    f"--prompts {str(source)!r} has {len(lines)} prompts but {len(videos)} videos were "
                    "found; a text file needs one prompt per video, in sorted file-name order"
                )
            prompts = dict(zip(videos, lines))
    for video in videos:
        sidecar = video.with_suffix(".txt")
        if video not in prompts and sidecar.is_file() and sidecar != source:
            prompts[video] = sidecar.read_text(encoding="utf-8").strip()
    return prompts


def _prompt_records(source: Path) -> list[dict[str, Any]]:
    text = source.read_text(encoding="utf-8")
    try:
        if source.suffix.lower() == ".csv":
            return list(csv.DictReader(text.splitlines()))
        if source.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (json.JSONDecodeError, csv.Error) as err:
        raise ScoringError(f"--prompts {str(source)!r}: cannot parse ({err})") from err
    if isinstance(data, dict):  # {path: prompt}
        return [{"path": k, "prompt": v} for k, v in data.items()]
    return list(data)


def _match_by_path(source: Path, records: list[dict[str, Any]], videos: Sequence[Path]) -> dict[Path, str]:
    """Match records to videos by path (relative to the prompts file, or as given), then by name."""
    by_path: dict[Path, str] = {}
    by_name: dict[str, str | None] = {}
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise ScoringError(f"--prompts {str(source)!r}: record {number} is not an object")
        path_key = next((k for k in PROMPT_PATH_KEYS if k in record), None)
        text_key = next((k for k in PROMPT_TEXT_KEYS if k in record), None)
        if path_key is None or text_key is None:
            raise ScoringError(
                f"--prompts {str(source)!r}: record {number} needs a path column ({'/'.join(PROMPT_PATH_KEYS)}) "
                f"and a prompt column ({'/'.join(PROMPT_TEXT_KEYS)}); found {sorted(record)}"
            )
        raw, prompt = Path(str(record[path_key])), str(record[text_key])
        for candidate in (raw, source.parent / raw):
            by_path[candidate.resolve()] = prompt
        # A file name shared by two records is ambiguous, so it is not used to match.
        by_name[raw.name] = prompt if raw.name not in by_name else None
    matched = {}
    for video in videos:
        prompt = by_path.get(video.resolve(), by_name.get(video.name))
        if prompt is not None:
            matched[video] = prompt
    return matched


# ---------------------------------------------------------------- scoring


def _score_batch(batch: list[tuple[VideoResult, Any]], rewards: Sequence[Any], device: str) -> None:
    import torch

    frames = torch.stack([video for _, video in batch]).to(device)
    prompts = [result.prompt or "" for result, _ in batch]
    try:
        with torch.inference_mode():
            scores: dict[str, Any] = {}
            for reward in rewards:
                if hasattr(reward, "score_terms"):
                    terms = reward.score_terms(frames, prompts)
                    scores.update(terms)
                    scores[reward.name] = reward.combine(terms)
                else:
                    scores[reward.name] = reward(frames, prompts)
    except Exception as err:  # noqa: BLE001  (report on these files, keep scoring the others)
        for result, _ in batch:
            result.error = f"scoring failed: {type(err).__name__}: {err}"
        return
    for i, (result, _) in enumerate(batch):
        result.scores = {name: float(value[i]) for name, value in scores.items()}


def score_videos(
    videos: Sequence[Path],
    prompts: dict[Path, str],
    rewards: Sequence[Any],
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    progress: bool = True,
) -> list[VideoResult]:
    """Read and score every video; failures are recorded on their result, never raised.

    Videos of the same shape are batched together (rewards resize internally, but a batch must
    stack).
    """
    from tqdm import tqdm

    from rlr_video.video_io import VideoReadError, read_video

    needs_prompts = any(getattr(r, "needs_prompts", True) for r in rewards)
    results = [VideoResult(path, prompts.get(path)) for path in videos]
    pending: dict[tuple[int, ...], list[tuple[VideoResult, Any]]] = {}
    for result in tqdm(results, desc="scoring", unit="video", disable=True if not progress else None):
        if needs_prompts and result.prompt is None:
            result.error = f"no prompt: give --prompts FILE or a sidecar {result.path.with_suffix('.txt').name}"
            continue
        try:
            video = read_video(result.path, num_frames=num_frames, fps=fps)
        except VideoReadError as err:  # the table names the file already
            result.error = f"cannot read video: {err.reason}"
            continue
        except OSError as err:
            result.error = str(err)
            continue
        result.frames = int(video.shape[0])
        group = pending.setdefault(tuple(video.shape), [])
        group.append((result, video))
        if len(group) >= batch_size:
            _score_batch(pending.pop(tuple(video.shape)), rewards, device)
    for group in pending.values():
        _score_batch(group, rewards, device)
    return results


def summaries(results: Sequence[VideoResult], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per column: n, mean, std and 95% confidence interval over the videos that scored."""
    from rewards.stats import summarize

    return {c: summarize([r.scores[c] for r in results if r.error is None and c in r.scores]) for c in columns}
