"""``rlr-video reward VIDEOS... --reward NAME``: score video files with the reward zoo.

Videos are files, folders or glob patterns, scored in sorted file-name order. One file is
scored per clip: files with the same name in one folder (``render`` writes NAME.mp4 and
NAME.gif) are one clip, scored from its .mp4 (else any format but .gif); ``--all-formats``
scores every file. The formats' scores differ: a GIF is quantised to a palette of 256 colours,
an mp4 is lossy yuv420 compression (colour at half resolution). Prompts come from
``--prompts`` (a text file with one prompt per line in that order; a CSV or JSONL with ``path``
and ``prompt`` columns) or else from a sidecar ``NAME.txt`` next to each video. Unreadable files
are reported with their reason and the rest are still scored; the exit code is 1 only when
every file failed (or, with ``--strict``, when any did), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlr_video.commands import add_import_option, check_device

PROMPT_PATH_KEYS = ("path", "video", "file", "filename")
PROMPT_TEXT_KEYS = ("prompt", "caption", "text")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "reward",
        help="score video files with rewards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("videos", nargs="*", help="video files, folders or glob patterns")
    parser.add_argument(
        "--reward",
        "-r",
        action="append",
        default=[],
        metavar="SPEC",
        help="a reward name (see --list-rewards), "
        "'name=weight,name=weight', a JSON dict spec, or a .json/.yaml file holding one; repeatable",
    )
    parser.add_argument(
        "--reward-opt",
        "-O",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="an option for reward NAME, e.g. clip.pretrained=/path/clip.bin or aesthetic.head=/path/head.pth",
    )
    parser.add_argument("--prompts", type=Path, help="prompts: .txt (one per line), .csv or .jsonl (path, prompt)")
    parser.add_argument("--frames", type=int, metavar="N", help="score N evenly spaced frames per video")
    parser.add_argument("--fps", type=float, help="resample videos to this frame rate before --frames")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per reward call (default 4)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--out", type=Path, help="write per-video scores and a summary to .json or .csv")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any file failed")
    parser.add_argument("--recursive", action="store_true", help="search folders recursively")
    parser.add_argument(
        "--all-formats",
        action="store_true",
        help="score every file, also NAME.gif next to NAME.mp4 (default: one file per clip, see above)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_import_option(parser)
    parser.add_argument("--list-rewards", action="store_true", help="list the registered rewards and exit")
    parser.set_defaults(func=run)
    return parser


class UsageError(Exception):
    """A problem with the command line or its files; reported and exit code 2."""


# ---------------------------------------------------------------- reward specs and options


def _parse_value(text: str) -> Any:
    """YAML scalars: 16 → int, 0.5 → float, true → bool, null → None, anything else a string."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_spec(text: str) -> str | dict[str, Any]:
    """A ``--reward`` value → a spec for :func:`rewards.build_reward`."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            spec = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise UsageError(f"--reward {text!r}: invalid JSON ({err})") from err
    elif Path(stripped).suffix.lower() in (".json", ".yaml", ".yml"):
        path = Path(stripped)
        if not path.is_file():
            raise UsageError(f"--reward {text!r}: no such spec file")
        import yaml

        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            from rlr_video.config import yaml_error

            raise UsageError(f"--reward {yaml_error(path, err)}") from None
    elif "=" in stripped:
        spec = {}
        for part in stripped.split(","):
            name, sep, weight = part.partition("=")
            value = _parse_value(weight)
            if not sep or not name.strip() or isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"--reward {text!r}: expected 'name=weight,name=weight', bad part {part!r}")
            spec[name.strip()] = float(value)
    else:
        return stripped
    if not isinstance(spec, (str, dict)):
        raise UsageError(f"--reward {text!r}: expected a name or a dict, got {type(spec).__name__}")
    return spec


def apply_options(specs: list[str | dict[str, Any]], options: Sequence[str]) -> list[tuple[Any, dict[str, Any]]]:
    """Attach ``NAME.KEY=VALUE`` options to the specs naming NAME → (spec, kwargs) pairs."""
    pairs: list[tuple[Any, dict[str, Any]]] = [(spec, {}) for spec in specs]
    for option in options:
        target, sep, value = option.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not name or not key:
            raise UsageError(f"--reward-opt {option!r}: expected NAME.KEY=VALUE")
        used = False
        for i, (spec, kwargs) in enumerate(pairs):
            if spec == name:
                kwargs[key] = _parse_value(value)
                used = True
            elif isinstance(spec, dict) and name in spec:
                entry = spec[name]
                entry = dict(entry) if isinstance(entry, dict) else {"weight": entry}
                entry[key] = _parse_value(value)
                pairs[i] = ({**spec, name: entry}, kwargs)
                used = True
        if not used:
            raise UsageError(f"--reward-opt {option!r}: no --reward names {name!r}")
    return pairs


def build_rewards(args: argparse.Namespace) -> list[Any]:
    from rewards import build_reward

    if not args.reward:
        raise UsageError("name at least one reward with --reward (see --list-rewards)")
    rewards = []
    for spec, kwargs in apply_options([parse_spec(s) for s in args.reward], args.reward_opt):
        try:
            rewards.append(build_reward(spec, **kwargs))
        except (KeyError, TypeError, ValueError) as err:
            message = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise UsageError(f"--reward {spec!r}: {message}") from err
    return rewards


def columns_of(rewards: Sequence[Any]) -> list[str]:
    """One column per reward; a composite also gets one per term, before its total."""
    names: list[str] = []
    for reward in rewards:
        parts = [r.name for _, r in reward.terms] if hasattr(reward, "score_terms") else []
        for name in [*parts, reward.name]:
            if name in names:
                raise UsageError(f"reward {name!r} is asked for twice; label one differently")
            names.append(name)
    return names


# ---------------------------------------------------------------- file selection


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


def _sort_key(path: Path) -> tuple[str, str]:
    return (path.name, str(path))


def load_prompts(source: Path | None, videos: Sequence[Path]) -> dict[Path, str]:
    """Prompts per video from ``source`` (.txt in order, .csv/.jsonl/.json by path) and sidecars."""
    prompts: dict[Path, str] = {}
    if source is not None:
        if not source.is_file():
            raise UsageError(f"--prompts {str(source)!r}: no such file")
        suffix = source.suffix.lower()
        if suffix in (".csv", ".jsonl", ".json"):
            prompts = _match_by_path(source, _prompt_records(source), videos)
        else:
            # blank and '#' lines are skipped, as in the trainer's prompt files
            text = source.read_text(encoding="utf-8").splitlines()
            lines = [line for line in text if line.strip() and not line.lstrip().startswith("#")]
            if len(lines) != len(videos):
                raise UsageError(
                    f"--prompts {str(source)!r} has {len(lines)} prompts but {len(videos)} videos were "
                    "found; a text file needs one prompt per video, in sorted file-name order"
                )
            prompts = {video: line.strip() for video, line in zip(videos, lines)}
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
        raise UsageError(f"--prompts {str(source)!r}: cannot parse ({err})") from err
    if isinstance(data, dict):  # {path: prompt}
        return [{"path": k, "prompt": v} for k, v in data.items()]
    return list(data)


def _match_by_path(source: Path, records: list[dict[str, Any]], videos: Sequence[Path]) -> dict[Path, str]:
    """Match records to videos by path (relative to the prompts file, or as given), then by name."""
    by_path: dict[Path, str] = {}
    by_name: dict[str, str | None] = {}
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise UsageError(f"--prompts {str(source)!r}: record {number} is not an object")
        path_key = next((k for k in PROMPT_PATH_KEYS if k in record), None)
        text_key = next((k for k in PROMPT_TEXT_KEYS if k in record), None)
        if path_key is None or text_key is None:
            raise UsageError(
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


@dataclass
class VideoResult:
    path: Path
    prompt: str | None
    frames: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None


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


# ---------------------------------------------------------------- output


def summaries(results: Sequence[VideoResult], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    from rewards.stats import summarize

    return {c: summarize([r.scores[c] for r in results if r.error is None and c in r.scores]) for c in columns}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_table(results: Sequence[VideoResult], columns: Sequence[str], summary: dict[str, dict[str, Any]]) -> None:
    ok = [r for r in results if r.error is None]
    width = min(48, max([len("video")] + [len(str(r.path)) for r in results]))
    head = f"{'video':<{width}}  {'prompt':<32}" + "".join(f"  {c:>12}" for c in columns)
    print(head)
    print("-" * len(head))
    for r in ok:
        name = str(r.path)
        name = name if len(name) <= width else "…" + name[-width + 1 :]
        prompt = (r.prompt or "")[:32]
        print(f"{name:<{width}}  {prompt:<32}" + "".join(f"  {_fmt(r.scores.get(c)):>12}" for c in columns))
    failed = [r for r in results if r.error is not None]
    if failed:
        print(f"\n{len(failed)} of {len(results)} files failed:")
        for r in failed:
            print(f"  {r.path}: {r.error}")
    print(f"\n{'reward':<24} {'n':>5} {'mean':>10} {'std':>10}  95% CI")
    for c in columns:
        s = summary[c]
        ci = "-" if s["ci95"] is None else f"[{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]"
        print(f"{c:<24} {s['n']:>5} {_fmt(s['mean']):>10} {_fmt(s['std']):>10}  {ci}")


def _stat(summary: dict[str, Any], stat: str) -> Any:
    """One summary number for a CSV cell ("" when undefined)."""
    if stat.startswith("ci95_"):
        ci = summary["ci95"]
        value = None if ci is None else ci[0 if stat == "ci95_low" else 1]
    else:
        value = summary[stat]
    return "" if value is None else value


def write_results(
    path: Path, results: Sequence[VideoResult], columns: Sequence[str], summary: dict[str, dict[str, Any]]
) -> None:
    """``.json``: {"rewards", "videos", "failed", "summary"}; ``.csv``: one row per video or
    failure, then summary rows, told apart by the ``kind`` column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["kind", "path", "prompt", "frames", *columns, "error"])
            writer.writeheader()
            for r in results:
                kind = "video" if r.error is None else "failed"
                row = {"kind": kind, "path": str(r.path), "prompt": r.prompt or "", "frames": r.frames}
                writer.writerow({**row, **r.scores, "error": r.error or ""})
            for stat in ("n", "mean", "std", "ci95_low", "ci95_high"):
                writer.writerow({"kind": stat, **{c: _stat(summary[c], stat) for c in columns}})
        return
    payload = {
        "rewards": list(columns),
        "videos": [
            {"path": str(r.path), "prompt": r.prompt, "frames": r.frames, "scores": r.scores}
            for r in results
            if r.error is None
        ],
        "failed": [{"path": str(r.path), "error": r.error} for r in results if r.error is not None],
        "summary": summary,
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- entry point


def run(args: argparse.Namespace) -> int:
    try:
        if args.list_rewards:
            from rewards import available_rewards

            print("\n".join(available_rewards()))
            return 0
        return _run(args)
    except UsageError as err:
        print(f"rlr-video reward: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from rewards import MissingWeightsError
    from rlr_video.video_io import list_videos

    if args.out is not None and args.out.suffix.lower() not in (".json", ".csv"):
        raise UsageError(f"--out {str(args.out)!r}: use a .json or .csv file")
    if args.batch_size <= 0:
        raise UsageError("--batch-size must be positive")
    if (args.frames is not None and args.frames <= 0) or (args.fps is not None and args.fps <= 0):
        raise UsageError("--frames and --fps must be positive")
    # A path that is not there is a typo, not a video that failed to read: stop before scoring.
    missing = [v for v in args.videos if not glob.has_magic(v) and not Path(v).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(repr(v) for v in missing)}")
    videos = sorted(list_videos(args.videos, recursive=args.recursive), key=_sort_key)
    if not videos:
        given = ", ".join(repr(v) for v in args.videos) or "nothing: give files, folders or glob patterns"
        folder = not args.recursive and any(Path(v).is_dir() for v in args.videos)
        raise UsageError(f"no videos found in {given}{' (--recursive searches sub-folders)' if folder else ''}")
    try:
        check_device(args.device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if not args.all_formats:
        videos, skipped = one_file_per_clip(videos)
        if skipped:
            print(
                f"rlr-video reward: {len(skipped)} files skipped: the same clip in another format "
                "(--all-formats scores them)",
                file=sys.stderr,
            )
    prompts = load_prompts(args.prompts, videos)
    try:
        rewards = build_rewards(args)
    except MissingWeightsError as err:
        raise UsageError(str(err)) from err
    columns = columns_of(rewards)
    device = args.device or _default_device()
    results = score_videos(
        videos,
        prompts,
        rewards,
        num_frames=args.frames,
        fps=args.fps,
        batch_size=args.batch_size,
        device=device,
        progress=not args.no_progress,
    )
    summary = summaries(results, columns)
    print_table(results, columns, summary)
    if args.out is not None:
        write_results(args.out, results, columns, summary)
        print(f"\nwrote {args.out}")
    failed = sum(r.error is not None for r in results)
    return 1 if failed == len(results) or (args.strict and failed) else 0


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
