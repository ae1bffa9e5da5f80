"""Procedural "moving shapes" videos with captions: the testbed's data.

Every video shows one filled shape of a saturated colour moving in a straight line
(or standing still) over an achromatic background, plain or textured. Its caption
says exactly what is in it, e.g. ``"a red circle moving left on a black background"``,
so prompt-following can be measured from pixels (see :mod:`rlr_video.testbed.scorer`).

Design choices, and why:

* Shape colours are the six saturated corners of the RGB cube and backgrounds are
  greys. Any two shape colours are >= 1.0 apart in RGB and every shape colour has
  chroma 1 while every background has chroma 0, so the scorer can separate object from
  background and name the colour without knowing the background.
* Sizes and speeds are given as fractions of the frame width, so the same spec renders
  at any resolution; trajectories are chosen to stay fully inside the frame.
* Rendering supersamples 4x and box-filters, so edges are anti-aliased the same way at
  every sub-pixel position (no aliasing cue that a model could latch onto).
* A fixed set of colour x shape x direction combinations is held out: training code
  samples ``split="train"`` and evaluation samples ``split="heldout"``, so a model that
  follows held-out prompts has composed attributes it never saw together.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")
# Unit motion per direction in image coordinates (x right, y down).
DIRECTION_VECTORS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "still": (0.0, 0.0),
}
PLAIN_BACKGROUNDS: dict[str, float] = {"black": 0.0, "gray": 0.5, "white": 1.0}
TEXTURED_BACKGROUNDS: tuple[str, ...] = ("checkered", "striped", "noisy")
BACKGROUNDS: tuple[str, ...] = tuple(PLAIN_BACKGROUNDS) + TEXTURED_BACKGROUNDS

# Ranges (fractions of the frame width) the training data is drawn from. The scorer
# uses them to flag sizes and speeds the model never saw (a reward-hacking symptom).
SIZE_RANGE: tuple[float, float] = (0.30, 0.42)
SPEED_RANGE: tuple[float, float] = (0.05, 0.075)  # per frame; 8 frames move 35-53% of W
# Speeds (SPEED_RANGE, SPEED_WORDS) are per frame of a clip of up to this many frames. A longer
# clip moves as far in all, slower per frame (speed_scale), so that its shape stays in frame:
# at 9 frames (Wan's causal VAE needs 1 + 4k) a big, fast shape would otherwise leave it.
REFERENCE_FRAMES = 8
# Optional caption words for size and speed, and the ranges that make them true.
SIZE_WORDS: dict[str, tuple[float, float]] = {"small": (0.30, 0.36), "big": (0.36, 0.42)}
SPEED_WORDS: dict[str, tuple[float, float]] = {
    "slowly": (0.05, 0.0625),
    "quickly": (0.0625, 0.075),
}

Combo = tuple[str, str, str]  # (colour, shape, direction)
Split = Literal["train", "heldout", "all"]


def all_combos() -> list[Combo]:
    """Every colour x shape x direction combination, in a fixed order."""
    return list(itertools.product(COLOURS, SHAPES, DIRECTIONS))


def _heldout_combos() -> frozenset[Combo]:
    # One colour per (shape, direction) pair, rotating through the colours: 15 of 90
    # combinations, every colour, shape and direction value appears both in training and
    # in the held-out set, and every pair of values is still seen in training.
    colours = list(COLOURS)
    held = set()
    for si, shape in enumerate(SHAPES):
        for di, direction in enumerate(DIRECTIONS):
            ci = (-(2 * si + di)) % len(colours)
            held.add((colours[ci], shape, direction))
    return frozenset(held)


HELDOUT_COMBOS: frozenset[Combo] = _heldout_combos()
TRAIN_COMBOS: tuple[Combo, ...] = tuple(c for c in all_combos() if c not in HELDOUT_COMBOS)


@dataclass(frozen=True)
class ShapeSpec:
    """Everything that determines one video. Geometry is in fractions of the width."""

    colour: str
    shape: str
    direction: str
    background: str
    size: float  # side of the shape's bounding box
    speed: float  # distance per frame
    x0: float  # centre at frame 0
    y0: float
    texture_seed: int = 0

    def __post_init__(self) -> None:
        for value, known, what in (
            (self.colour, COLOURS, "colour"),
            (self.shape, SHAPES, "shape"),
            (self.direction, DIRECTIONS, "direction"),
            (self.background, BACKGROUNDS, "background"),
        ):
            if value not in known:
                raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")

    @property
    def combo(self) -> Combo:
        """The (colour, shape, direction) triple that decides train vs held-out."""
        return (self.colour, self.shape, self.direction)

    def centre(self, frame: int) -> tuple[float, float]:
        """Centre of the shape at ``frame`` (fractions of the width)."""
        vx, vy = DIRECTION_VECTORS[self.direction]
        return self.x0 + vx * self.speed * frame, self.y0 + vy * self.speed * frame


def speed_scale(frames: int) -> float:
    """Factor on the per-frame speeds for a clip of ``frames`` frames: 1 up to
    ``REFERENCE_FRAMES``, then such that the clip's whole travel stays that of the reference."""
    return min(1.0, (REFERENCE_FRAMES - 1) / max(1, frames - 1))


def motion_phrase(direction: str) -> str:
    """The caption's words for a direction: ``moving left`` ... ``standing still``."""
    return "standing still" if direction == "still" else f"moving {direction}"


def combo_prompt(colour: str, shape: str, direction: str | None, background: str | None = None) -> str:
    """The plain caption of a combination: ``"a red circle moving left on a black background"``;
    with ``direction`` None it has no motion phrase (``"a red circle on a black background"``)."""
    on = f" on a {background} background" if background else ""
    motion = f" {motion_phrase(direction)}" if direction else ""
    return f"a {colour} {shape}{motion}{on}"


def caption(spec: ShapeSpec, detailed: bool = False, frames: int = REFERENCE_FRAMES) -> str:
    """The caption of ``spec``; ``detailed`` adds size ("small"/"big") and speed words (for a
    clip of ``frames`` frames: see ``speed_scale``)."""
    size_word = speed_word = ""
    if detailed:
        size_word = next(w for w, (lo, hi) in SIZE_WORDS.items() if spec.size <= hi or w == "big")
        if spec.direction != "still":
            speed = spec.speed / speed_scale(frames)
            speed_word = next(w for w, (lo, hi) in SPEED_WORDS.items() if speed <= hi or w == "quickly")
    parts = ["a", size_word, spec.colour, spec.shape, motion_phrase(spec.direction), speed_word]
    parts += ["on", "a", spec.background, "background"]
    return " ".join(p for p in parts if p)


def combos_for(split: Split) -> list[Combo]:
    """The combinations a split draws from."""
    if split == "train":
        return list(TRAIN_COMBOS)
    if split == "heldout":
        return sorted(HELDOUT_COMBOS)
    if split == "all":
        return all_combos()
    raise ValueError(f"unknown split {split!r}; use 'train', 'heldout' or 'all'")


def sample_spec(
    rng: np.random.Generator,
    split: Split = "train",
    combo: Combo | None = None,
    frames: int = 8,
) -> ShapeSpec:
    """Draw a random spec from ``split`` (or for a given ``combo``) that stays in frame."""
    if combo is None:
        options = combos_for(split)
        combo = options[int(rng.integers(len(options)))]
    colour, shape, direction = combo
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    size = float(rng.uniform(*SIZE_RANGE))
    speed = 0.0 if direction == "still" else float(rng.uniform(*SPEED_RANGE)) * speed_scale(frames)
    travel = speed * (frames - 1)
    half = size / 2
    vx, vy = DIRECTION_VECTORS[direction]
    # The start is drawn so that the whole trajectory keeps the shape inside the frame.
    lo_x, hi_x = half - min(vx, 0) * travel, 1 - half - max(vx, 0) * travel
    lo_y, hi_y = half - min(vy, 0) * travel, 1 - half - max(vy, 0) * travel
    x0 = float(rng.uniform(lo_x, hi_x))
    y0 = float(rng.uniform(lo_y, hi_y))
    return ShapeSpec(colour, shape, direction, background, size, speed, x0, y0, int(rng.integers(2**31)))


def shape_mask(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float):
    """Boolean mask of a shape with bounding box [cx-r, cx+r] x [cy-r, cy+r]."""
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":  # isosceles, apex up, base at the bottom of the box
        t = (dy + r) / (2 * r)  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= r * t)
    raise ValueError(f"unknown shape {shape!r}")


def _background(name: str, resolution: int, seed: int) -> np.ndarray:
    """An (H, W) grey-level image. Textures keep within 0.5 +- 0.15 of mid-grey."""
    if name in PLAIN_BACKGROUNDS:
        return np.full((resolution, resolution), PLAIN_BACKGROUNDS[name], dtype=np.float32)
    # Texture periods scale with the resolution so 16 and 32 px show the same pattern.
    cell = max(1, resolution // 8)
    yy, xx = np.mgrid[0:resolution, 0:resolution]
    if name == "checkered":
        return np.where(((yy // cell) + (xx // cell)) % 2 == 0, 0.38, 0.62).astype(np.float32)
    if name == "striped":  # diagonal, so it has no horizontal/vertical motion cue
        return np.where(((yy + xx) // cell) % 2 == 0, 0.38, 0.62).astype(np.float32)
    if name == "noisy":
        rng = np.random.default_rng(seed)
        return rng.uniform(0.35, 0.65, size=(resolution, resolution)).astype(np.float32)
    raise ValueError(f"unknown background {name!r}")


def render(spec: ShapeSpec, frames: int = 8, resolution: int = 16, supersample: int = 4):
    """Render ``spec`` as a float32 tensor (F, 3, H, W) in [0, 1]."""
    s = supersample
    n = resolution * s
    # Pixel-centre coordinates of the supersampled grid, in units of output pixels.
    coords = (np.arange(n, dtype=np.float32) + 0.5) / s
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    bg = _background(spec.background, resolution, spec.texture_seed)
    colour = np.asarray(COLOURS[spec.colour], dtype=np.float32)[:, None, None]
    out = np.empty((frames, 3, resolution, resolution), dtype=np.float32)
    r = spec.size * resolution / 2
    for f in range(frames):
        cx, cy = spec.centre(f)
        mask = shape_mask(spec.shape, xs, ys, cx * resolution, cy * resolution, r)
        cover = mask.reshape(resolution, s, resolution, s).mean(axis=(1, 3)).astype(np.float32)
        out[f] = bg[None] * (1 - cover[None]) + colour * cover[None]
    return torch.from_numpy(out)


@dataclass
class Batch:
    """A batch of videos (B, F, 3, H, W) in [0, 1] with their captions and specs."""

    videos: torch.Tensor
    captions: list[str]
    specs: list[ShapeSpec]


def make_batch(
    batch_size: int,
    seed: int | np.random.Generator,
    split: Split = "train",
    frames: int = 8,
    resolution: int = 16,
    detailed_captions: bool = False,
) -> Batch:
    """A deterministic batch: the same ``seed`` always gives the same videos."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    specs = [sample_spec(rng, split, frames=frames) for _ in range(batch_size)]
    videos = torch.stack([render(s, frames, resolution) for s in specs])
    captions = [caption(s, detailed_captions, frames) for s in specs]
    return Batch(videos, captions, specs)


def combo_prompts(combos: list[Combo], per_combo: int) -> list[str]:
    """``per_combo`` prompts per combination, cycling through the backgrounds."""
    return [combo_prompt(*combo, BACKGROUNDS[i % len(BACKGROUNDS)]) for combo in combos for i in range(per_combo)]


def heldout_prompts(background: str | None = None) -> list[str]:
    """One caption per held-out combination (``background`` defaults to rotating)."""
    prompts = []
    for i, (colour, shape, direction) in enumerate(sorted(HELDOUT_COMBOS)):
        bg = background or BACKGROUNDS[i % len(BACKGROUNDS)]
        prompts.append(combo_prompt(colour, shape, direction, bg))
    return prompts


def vocabulary() -> list[str]:
    """Every word any caption (plain or detailed) can contain, for building tokenizers."""
    words = ["a", "an", "on", "background", "moving", "standing", "still"]
    words += list(COLOURS) + list(SHAPES) + list(DIRECTIONS) + list(BACKGROUNDS)
    words += list(SIZE_WORDS) + list(SPEED_WORDS)
    return sorted(set(words))
