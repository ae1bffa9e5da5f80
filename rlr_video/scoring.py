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
    """The columns of :func:`reward_scores`, for each reward in turn: a composite's terms, then its
    total under its own name; a reward with ``heads`` (videoalign) ``NAME.HEAD`` for each of its
    ``heads_names`` before its own value."""
    names: list[str] = []
    for name, _ in _summarised_by(rewards):
        if name in names:
            raise ScoringError(f"reward {name!r} is asked for twice; label one differently")
        names.append(name)
    return names


def _is_composite(reward: Any) -> bool:
    return callable(getattr(reward, "combine", None)) and isinstance(getattr(reward, "terms", None), list | tuple)


def _heads(reward: Any) -> tuple[str, ...]:
    names = getattr(reward, "heads_names", None)
    return tuple(names) if names and callable(getattr(reward, "heads", None)) else ()


def reward_scores(reward: Any, frames: Any, prompts: Sequence[str], video_fps: float | None = None) -> dict[str, Any]:
    """One batch's (B,) scores per column of :func:`reward_columns` (``[reward]``): every term of a
    composite, then the composite's weighted total; each head of a reward with ``heads``. The
    frames' rate ``video_fps`` goes to the rewards that take it (``takes_video_fps``: videoalign)."""
    if not _is_composite(reward):
        return _leaf_scores(reward, frames, prompts, video_fps)
    scores: dict[str, Any] = {}
    for _, term in reward.terms:
        scores.update(_leaf_scores(term, frames, prompts, video_fps))
    scores[reward.name] = reward.combine({term.name: scores[term.name] for _, term in reward.terms})
    return scores


def _leaf_scores(reward: Any, frames: Any, prompts: Sequence[str], video_fps: float | None) -> dict[str, Any]:
    fps = {"video_fps": video_fps} if video_fps is not None and getattr(reward, "takes_video_fps", False) else {}
    heads = _heads(reward)
    if not heads:
        return {reward.name: reward(frames, prompts, **fps)}
    values = reward.heads(frames, prompts, **fps)
    scores = {f"{reward.name}.{head}": values[head] for head in heads}
    chosen = getattr(reward, "head", None)  # the head the reward's value is (videoalign's head=)
    scores[reward.name] = values[chosen] if chosen in values else reward(frames, prompts, **fps)
    return scores


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


def _score_batch(
    batch: list[tuple[VideoResult, Any]], reward: Any, indices: list[int], video_fps: float | None, device: str
) -> None:
    """Score the videos of ``batch`` (same shape and frame rate) with one reward, on the frames
    ``indices`` (the frames that reward reads, see :func:`reward_frames`)."""
    import torch

    frames = torch.stack([video for _, video in batch])
    if len(indices) != frames.shape[1]:
        frames = frames[:, indices]
    prompts = [result.prompt or "" for result, _ in batch]
    try:
        with torch.inference_mode():
            scores = reward_scores(reward, frames.to(device), prompts, video_fps)
    except Exception as err:  # noqa: BLE001  (report on these files, keep scoring the others)
        for result, _ in batch:
            result.error = f"scoring failed: {type(err).__name__}: {err}"
            result.scores = {}
        return
    for i, (result, _) in enumerate(batch):
        if result.error is None:
            result.scores.update({name: float(value[i]) for name, value in scores.items()})


def reward_frames(
    reward: Any, total: int, source_fps: float | None, num_frames: int | None = None, fps: float | None = None
) -> list[int]:
    """The frames of a ``total``-frame file that ``reward`` is given: for a frame-mean reward
    (``frame_sampling`` ``"any"``) the file resampled to ``fps`` and then ``num_frames`` evenly
    spaced (``rlr-video reward --fps/--frames``); every frame for the others (``"all"``: flicker
    and VBench's consistency compare neighbours; ``"own"``: videoalign samples by time itself)."""
    from rewards.frames import frame_sampling, select_frames
    from rlr_video.video_io import select_frame_indices

    rule = frame_sampling(reward)
    if rule != "any":
        return list(range(total))
    resampled = select_frame_indices(total, source_fps, None, fps)
    return [resampled[i] for i in select_frames(len(resampled), num_frames, rule)]


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

    Each file is decoded once, whole; each reward then gets the frames it reads
    (:func:`reward_frames`: ``num_frames`` and ``fps`` thin the frames of frame-mean rewards only)
    and, if it takes it, the file's frame rate. Videos of the same shape and frame rate are batched
    together (rewards resize internally, but a batch must stack, and share one rate).
    """
    from tqdm import tqdm

    from rewards.frames import frame_sampling
    from rlr_video.video_io import VideoReadError, decode_video

    needs_prompts = any(getattr(r, "needs_prompts", True) for r in rewards)
    resamples = fps is not None and any(frame_sampling(r) == "any" for r in rewards)
    results = [VideoResult(path, prompts.get(path)) for path in videos]
    pending: dict[tuple[Any, ...], list[tuple[VideoResult, Any]]] = {}

    def score(key: tuple[Any, ...]) -> None:
        group = pending.pop(key)
        total, rate = key[0], key[-1]
        for reward in rewards:
            group = [(result, video) for result, video in group if result.error is None]
            if group:
                _score_batch(group, reward, reward_frames(reward, total, rate, num_frames, fps), rate, device)

    for result in tqdm(results, desc="scoring", unit="video", disable=True if not progress else None):
        if needs_prompts and result.prompt is None:
            result.error = f"no prompt: give --prompts FILE or a sidecar {result.path.with_suffix('.txt').name}"
            continue
        try:
            video, rate = decode_video(result.path)
        except VideoReadError as err:  # the table names the file already
            result.error = f"cannot read video: {err.reason}"
            continue
        except OSError as err:
            result.error = str(err)
            continue
        if resamples and not rate:
            result.error = "the video's frame rate is unknown, so --fps cannot resample it"
            continue
        result.frames = int(video.shape[0])
        key = (*video.shape, rate)
        pending.setdefault(key, []).append((result, video))
        if len(pending[key]) >= batch_size:
            score(key)
    for key in list(pending):
        score(key)
    for result in results:
        if result.error is not None:
            result.scores = {}
    return results


def summaries(results: Sequence[VideoResult], rewards: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per column of :func:`reward_columns`: n, mean, std and 95% confidence interval over the
    videos that scored.

    A reward's own column (a leaf reward or a composite's term) is summarised as its reference
    reports a set of videos (``rewards.stats.reference_mean``: VBench's consistency weights each
    video by its F − 1 frame pairs, the others average), its interval that of the weighted mean
    (``rewards.stats.summarize``). A head column and a composite's total are plain means over
    the videos: the total is the mean of the per-video totals, the quantity training raises
    (E over videos of Σ w_k R_k), not Σ w_k times each term's reference mean (the two differ only
    when a term's reference weights the videos).
    """
    from rewards.stats import reference_mean, reference_weights, summarize

    out = {}
    for column, reward in _summarised_by(rewards):
        ok = [r for r in results if r.error is None and column in r.scores]
        values, counts = [r.scores[column] for r in ok], [r.frames for r in ok]
        if reward is None or not values:
            out[column] = summarize(values)
            continue
        weights = reference_weights(reward, counts)
        summary = summarize(values, weights)
        mean = reference_mean(reward, values, counts)
        if weights is None and mean != summary["mean"]:  # an aggregate that does not say its weights
            summary["ci95"] = None
        out[column] = {**summary, "mean": mean}
    return out


def _summarised_by(rewards: Sequence[Any]) -> list[tuple[str, Any]]:
    """(column, the reward whose reference summarises it, or None for a plain mean), in column order."""
    pairs: list[tuple[str, Any]] = []
    for reward in rewards:
        leaves = [term for _, term in reward.terms] if _is_composite(reward) else [reward]
        for leaf in leaves:
            pairs += [(f"{leaf.name}.{head}", None) for head in _heads(leaf)] + [(leaf.name, leaf)]
        if _is_composite(reward):
            pairs.append((reward.name, None))
    return pairs
