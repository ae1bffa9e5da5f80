"""``rlr-video reward VIDEOS... --reward NAME``: score video files with the reward zoo.

Videos are files, folders or glob patterns, scored in sorted file-name order. One file is
scored per clip: files with the same name in one folder (``render`` writes NAME.mp4 and
NAME.gif) are one clip, scored from its .mp4 (else any format but .gif); ``--all-formats``
scores every file. The formats' scores differ: a GIF is quantised to a palette of 256 colours,
an mp4 is lossy yuv420 compression (colour at half resolution). Prompts come from
``--prompts`` (a text file with one prompt per line in that order; a CSV or JSONL with ``path``
and ``prompt`` columns) or else from a sidecar ``NAME.txt`` next to each video.

Each file is read once, whole. ``--frames`` and ``--fps`` thin the frames of frame-mean rewards
(aesthetic, clip, hpsv2, pickscore, ...); flicker and temporal read every frame (VBench compares
neighbouring frames), videoalign every frame and the file's frame rate (it samples by time), and
a mixture the frames of its strictest term. A reward with heads (videoalign: VQ, MQ, TA,
Overall) gets a column per head. The summary is each reward's mean over the videos as its
reference reports it (VBench's consistency weights a video by its frame pairs, F − 1); a
mixture's total is the plain mean of the per-video totals. Unreadable files are reported with
their reason and the rest are still scored; the exit code is 1 only when every file failed (or,
with ``--strict``, when any did), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlr_video.commands import add_import_option, check_device

if TYPE_CHECKING:
    from rlr_video.scoring import VideoResult


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
    parser.add_argument(
        "--frames",
        type=int,
        metavar="N",
        help="give frame-mean rewards (aesthetic, clip, ...) N evenly spaced frames per video; "
        "flicker, temporal and videoalign always read every frame",
    )
    parser.add_argument(
        "--fps", type=float, help="resample videos to this frame rate before --frames (frame-mean rewards only)"
    )
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


# ---------------------------------------------------------------- output


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
    from rlr_video.scoring import ScoringError, one_file_per_clip, reward_columns, score_videos, sort_key, summaries
    from rlr_video.scoring import video_prompts as read_prompts
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
    videos = sorted(list_videos(args.videos, recursive=args.recursive), key=sort_key)
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
    try:
        prompts = read_prompts(args.prompts, videos)
        rewards = build_rewards(args)
        columns = reward_columns(rewards)
    except (MissingWeightsError, ScoringError) as err:
        raise UsageError(str(err)) from err
    if args.frames is not None or args.fps is not None:
        _note_whole_videos(rewards)
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
    summary = summaries(results, rewards)
    print_table(results, columns, summary)
    if args.out is not None:
        write_results(args.out, results, columns, summary)
        print(f"\nwrote {args.out}")
    failed = sum(r.error is not None for r in results)
    return 1 if failed == len(results) or (args.strict and failed) else 0


def _note_whole_videos(rewards: Sequence[Any]) -> None:
    """Say which rewards ignore ``--frames``/``--fps``: those whose reference reads every frame."""
    from rewards.frames import frame_sampling

    why = {
        "all": "its reference compares neighbouring frames, so it reads every frame",
        "own": "it samples the frames by time itself, from every frame and the file's frame rate",
    }
    for reward in rewards:
        rule = frame_sampling(reward)
        if rule in why:
            print(f"rlr-video reward: --frames/--fps do not apply to {reward.name}: {why[rule]}", file=sys.stderr)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
