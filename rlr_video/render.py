"""Preview batches: prompts x {base model, LoRA checkpoints} -> videos, contact sheets, gallery.

Every video of a prompt is sampled from the same seed (the initial latents and every step's
noise come from a generator seeded by the render seed and the prompt's index), so the columns
differ only by the weights. Videos are sampled in batches; each video's noise is drawn from
its own generator, so the result does not depend on the batch it was in.

The output folder holds, for prompt i and variant v:

    videos/<i>-<v>.mp4, videos/<i>-<v>.gif   the video
    contact/<i>.png                          frames of every variant, one row each
    scores.json                              every video's reward scores
    index.html                               the gallery, referencing exactly these files

Scores are computed from the written mp4 files read back, as ``rlr-video reward`` would. The
gallery labels the columns base and fine-tuned, shows each clip's reward and, on top, each
column's mean; with a held-out evaluation in the config (``train.eval``) the held-out rewards'
scores too, as ``held-out <reward>``: the guard against a fine-tune that only fools its reward.
When every prompt is a testbed caption ("a red circle moving left"), it also shows the
testbed's analytic ground truth (:mod:`rlr_video.testbed.scorer`) per clip and per column:
the referee a hacked reward cannot fool.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlr_video.chain.sample import sample_videos
from rlr_video.config import Config
from rlr_video.prompts import encode_prompt, final_prompt, split_prompt
from rlr_video.seeds import derive_seed


def variant_labels(loras: Sequence[str | Path]) -> list[str]:
    """Column names: ``base`` then each LoRA's folder name (its checkpoint's, for a
    checkpoint's ``lora/`` folder), made unique."""
    labels = ["base"]
    for lora in loras:
        path = Path(lora).resolve()
        name = path.parent.name if path.name == "lora" else path.name
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "lora"
        candidate, n = name, 2
        while candidate in labels:
            candidate, n = f"{name}-{n}", n + 1
        labels.append(candidate)
    return labels


def render(
    config: Config,
    prompts: Sequence[str | tuple[str, str, str]],
    loras: Sequence[str | Path] = (),
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Render the gallery; returns the path of ``index.html``."""
    from tqdm.auto import tqdm

    from rlr_video.backbones.multiscale import for_prompts
    from rlr_video.train.checkpoint import weights_dir
    from rlr_video.train.components import build_components
    from rlr_video.train.model import load_weights
    from rlr_video.video_io import write_gif, write_video

    r = config.render
    out = Path(out_dir or r.output_dir or Path(config.train.output_dir) / "render")
    encoded = [encode_prompt(p) for p in prompts]
    labels = variant_labels(loras)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_components(config, device, reward=False, estimator=False).backbone  # LoRA initialised as in training
    backbone = for_prompts(model, encoded)
    base = [p.detach().clone() for p in model.trainable_parameters()]
    for lora in loras:  # a LoRA of another model fails here, before anything is written
        load_weights(model, weights_dir(lora))
    seeds = [derive_seed(r.seed, "render", i) for i in range(len(encoded))]
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "contact").mkdir(parents=True, exist_ok=True)

    videos: dict[tuple[int, str], Tensor] = {}
    batches = [range(s, min(s + r.batch_size, len(encoded))) for s in range(0, len(encoded), r.batch_size)]
    bar = tqdm(total=len(labels) * len(encoded), disable=not progress, desc="render")
    for label, lora in zip(labels, [None, *loras], strict=True):
        with torch.no_grad():
            for p, b in zip(model.trainable_parameters(), base, strict=True):
                p.copy_(b)
        if lora is not None:
            load_weights(model, weights_dir(lora))
        for batch in batches:
            frames = sample_videos(backbone, [encoded[i] for i in batch], [seeds[i] for i in batch])
            for i, video in zip(batch, frames, strict=True):
                videos[(i, label)] = video
                stem = out / "videos" / f"{i:03d}-{label}"
                write_video(stem.with_suffix(".mp4"), video, fps=r.fps)
                write_gif(stem.with_suffix(".gif"), video, fps=r.fps)
                # The sidecar caption that `rlr-video reward` reads for NAME.mp4.
                stem.with_suffix(".txt").write_text(final_prompt(encoded[i]) + "\n", encoding="utf-8")
            bar.update(len(batch))
    bar.close()

    for i in range(len(encoded)):
        contact_sheet([videos[(i, label)] for label in labels], labels, r.contact_frames).save(
            out / "contact" / f"{i:03d}.png"
        )
    pairs = [(i, label) for i in range(len(encoded)) for label in labels]
    files = [out / "videos" / f"{i:03d}-{label}.mp4" for i, label in pairs]
    scores = score_files(files, [encoded[i] for i, _ in pairs], r.reward or config.reward, device)
    if config.train.eval is not None:
        held = heldout_scores(files, [encoded[i] for i, _ in pairs], config.train.eval.reward, device)
        scores = [{**row, **more} for row, more in zip(scores, held, strict=True)]
    table = {path.name: row for path, row in zip(files, scores, strict=True)}
    (out / "scores.json").write_text(json.dumps(table, indent=2, sort_keys=True), encoding="utf-8")
    truth = ground_truth([videos[pair] for pair in pairs], [final_prompt(encoded[i]) for i, _ in pairs])
    if truth is not None:
        truth = {path.stem: row for path, row in zip(files, truth, strict=True)}
    index = out / "index.html"
    index.write_text(gallery_html(encoded, labels, table, truth), encoding="utf-8")
    return index


def ground_truth(videos: Sequence[Tensor], prompts: Sequence[str]) -> list[dict[str, float]] | None:
    """Per video, the testbed scorer's 0/1 ``colour``, ``shape``, ``direction`` and ``all``;
    None unless every prompt is a testbed caption (the prompts of any other model)."""
    from rlr_video.testbed.scorer import ATTRIBUTES, PromptParseError, parse_prompt, score_video

    try:
        parsed = [parse_prompt(prompt) for prompt in prompts]
    except PromptParseError:
        return None
    rows = [score_video(video, prompt) for video, prompt in zip(videos, parsed, strict=True)]
    return [{k: row[k] for k in (*ATTRIBUTES, "all")} for row in rows]


HELD_OUT = "held-out "  # the gallery's prefix of a held-out reward's column


def heldout_scores(
    paths: Sequence[Path], prompts: Sequence[str], spec: str | dict[str, Any], device: str = "cpu"
) -> list[dict[str, float]]:
    """Each file's held-out scores (``train.eval.reward``, see :func:`score_files`) as
    ``held-out <column>``; a composite's total is ``held-out total``, as in metrics.jsonl."""
    from rewards import build_reward

    reward = build_reward(spec)
    composite = isinstance(getattr(reward, "terms", None), list | tuple)
    rename = {reward.name: "total"} if composite else {}
    rows = score_files(paths, prompts, reward, device)
    return [{HELD_OUT + rename.get(k, k): v for k, v in row.items()} for row in rows]


def score_files(
    paths: Sequence[Path], prompts: Sequence[str], spec: Any, device: str = "cpu"
) -> list[dict[str, float]]:
    """Each file's reward scores, read back from disk by the function ``rlr-video reward``
    uses (same reading, batching and columns: every term of a composite, then its total).
    ``spec``: a reward spec or a built reward. The reward sees the final (fine) part of a
    multi-scale prompt."""
    from rewards import build_reward
    from rlr_video.scoring import score_videos

    reward = build_reward(spec)
    results = score_videos(
        list(paths),
        {Path(p): final_prompt(q) for p, q in zip(paths, prompts, strict=True)},
        [reward],
        device=device,
        progress=False,
    )
    failed = [f"{r.path}: {r.error}" for r in results if r.error is not None]
    if failed:
        raise RuntimeError("scoring rendered videos failed: " + "; ".join(failed))
    return [r.scores for r in results]


def contact_sheet(videos: Sequence[Tensor], labels: Sequence[str], max_frames: int, cell: int = 96):
    """A PIL image: one row per video (evenly spaced frames), its label on the left."""
    from PIL import Image, ImageDraw

    count = min(max_frames, videos[0].shape[0])
    picks = torch.linspace(0, videos[0].shape[0] - 1, count).round().long().tolist()
    height, width = videos[0].shape[-2:]
    scale = max(1, cell // max(height, width))  # tiny videos are enlarged, pixels kept sharp
    label_w, pad = 110, 4
    sheet = Image.new("RGB", (label_w + count * (width * scale + pad), len(videos) * (height * scale + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (video, label) in enumerate(zip(videos, labels, strict=True)):
        y = row * (height * scale + pad)
        draw.text((4, y + 4), label, fill="black")
        for col, f in enumerate(picks):
            array = (video[f].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            image = Image.fromarray(array).resize((width * scale, height * scale), Image.NEAREST)
            sheet.paste(image, (label_w + col * (width * scale + pad), y))
    return sheet


def column_title(labels: Sequence[str], index: int) -> str:
    """What the gallery calls a column: the first is the base model, the others LoRAs."""
    return "base model" if index == 0 else f"fine-tuned: {labels[index]}"


def gallery_html(
    prompts: Sequence[str],
    labels: Sequence[str],
    scores: dict[str, dict[str, float]],
    truth: dict[str, dict[str, float]] | None = None,
) -> str:
    """The static page: a summary per column (mean reward, and the testbed ground truth when
    ``truth`` is given), then per prompt the variants side by side with their scores."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>rlr-video render</title>',
        "<style>body{font-family:sans-serif;margin:1.5em} .row{display:flex;gap:1em;flex-wrap:wrap}"
        " .cell{text-align:center} video,img.gif{width:256px;image-rendering:pixelated}"
        " table{margin:auto;font-size:0.85em} td,th{padding:0 0.4em} h2{font-size:1.05em}</style>",
        "</head><body>",
        '<h1>rlr-video render</h1><p>Same seed per prompt in every column. <a href="scores.json">scores.json</a></p>',
        _summary_html(len(prompts), labels, scores, truth),
    ]
    for i, prompt in enumerate(prompts):
        parts_ = split_prompt(prompt)
        title = " / ".join(f"{s}: {e(t)}" for s, t in zip(("coarse", "mid", "fine"), parts_)) if parts_ else e(prompt)
        parts.append(f"<h2>{i:03d}. {title}</h2><div class='row'>")
        for column, label in enumerate(labels):
            name = f"{i:03d}-{label}"
            rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.4f}</td></tr>" for k, v in scores[f"{name}.mp4"].items())
            if truth is not None:
                marks = " ".join(f"{k} {'✓' if v else '✗'}" for k, v in truth[name].items() if k != "all")
                rows += f"<tr><td>ground truth</td><td>{marks}</td></tr>"
            parts.append(
                f"<div class='cell'><b>{e(column_title(labels, column))}</b><br>"
                f'<video src="videos/{name}.mp4" autoplay loop muted playsinline></video><br>'
                f'<a href="videos/{name}.gif">gif</a><table>{rows}</table></div>'
            )
        parts.append(f'</div><p><img src="contact/{i:03d}.png" alt="contact sheet {i:03d}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary_html(
    count: int, labels: Sequence[str], scores: dict[str, dict[str, float]], truth: dict[str, dict[str, float]] | None
) -> str:
    """One row per column: each reward's mean over the prompts, and the ground-truth accuracies."""
    e = html.escape
    rewards = list(scores[f"000-{labels[0]}.mp4"])
    checks = list(next(iter(truth.values()))) if truth else []
    head = "".join(f"<th>{e(k)}</th>" for k in rewards) + "".join(f"<th>ground truth: {k}</th>" for k in checks)
    body = []
    for column, label in enumerate(labels):
        names = [f"{i:03d}-{label}" for i in range(count)]
        means = [sum(scores[f"{n}.mp4"][k] for n in names) / count for k in rewards]
        right = [sum(truth[n][k] for n in names) / count for k in checks] if truth else []
        cells = "".join(f"<td>{m:.4f}</td>" for m in means) + "".join(f"<td>{r:.0%}</td>" for r in right)
        body.append(f"<tr><th>{e(column_title(labels, column))}</th>{cells}</tr>")
    note = (
        "<p>Ground truth: the testbed's analytic scorer (rlr_video.testbed.scorer) checks colour, shape and"
        " direction from the pixels; unlike a learned reward, it cannot be hacked.</p>"
        if truth
        else ""
    )
    caption = f"<caption>mean over {count} prompts</caption>"
    return f"<table class='summary'>{caption}<tr><th></th>{head}</tr>{''.join(body)}</table>{note}"
