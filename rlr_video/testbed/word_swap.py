"""Does a model listen to each word of its prompt? Same noise, one attribute word swapped.

Accuracy alone cannot tell a model that ignores a word from one that maps it wrongly. Here
every (prompt, seed) becomes a group of videos sampled from the *same* starting noise whose
prompts differ only in one attribute (every colour, or every shape, or every direction), and
the analytic scorer measures each video. Per attribute:

* ``follows``: the share of videos that show the value their prompt asks for (chance is one
  over the number of values);
* ``responds``: the share of groups in which the measured value changes with the word at
  all. A model that ignores the word scores 0 however good its videos look, because the
  noise alone decides what it draws.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from torch import Tensor

from rlr_video.testbed.scorer import ATTRIBUTES, measure, parse_prompt
from rlr_video.testbed.shapes import COLOURS, DIRECTIONS, SHAPES, combo_prompt

VALUES: dict[str, Sequence[str]] = {"colour": tuple(COLOURS), "shape": SHAPES, "direction": DIRECTIONS}

# sample_fn(prompts, seed) -> videos (len(prompts), F, 3, H, W) in [0, 1], every video drawn
# from the same starting noise, which ``seed`` fixes.
SampleFn = Callable[[list[str], int], Tensor]


def retarget(prompt: str, target: Mapping[str, str]) -> str:
    """``prompt`` with each attribute in ``target`` set to its value, e.g. ``{"direction": "right"}``."""
    for attribute, value in target.items():
        if attribute not in VALUES:
            raise ValueError(f"unknown attribute {attribute!r}; use one of {', '.join(VALUES)}")
        if value not in VALUES[attribute]:
            raise ValueError(f"{attribute} {value!r} is not one of {', '.join(VALUES[attribute])}")
    parsed = parse_prompt(prompt)
    words = {"colour": parsed.colour, "shape": parsed.shape, "direction": parsed.direction, **target}
    return combo_prompt(**words, background=parsed.background)


def swapped_prompts(prompt: str, attribute: str) -> list[str]:
    """``prompt`` with ``attribute`` set to each of its values in turn (the rest kept)."""
    if attribute not in VALUES:
        raise ValueError(f"unknown attribute {attribute!r}; use one of {', '.join(VALUES)}")
    parsed = parse_prompt(prompt)
    out = []
    for value in VALUES[attribute]:
        words = {"colour": parsed.colour, "shape": parsed.shape, "direction": parsed.direction, attribute: value}
        out.append(combo_prompt(**words, background=parsed.background))
    return out


def word_swap(
    sample_fn: SampleFn,
    prompts: Sequence[str],
    seeds: Sequence[int],
    attributes: Sequence[str] = ATTRIBUTES,
) -> dict[str, dict[str, float]]:
    """``follows`` and ``responds`` (see the module doc) per attribute, over prompts x seeds."""
    report = {}
    for attribute in attributes:
        hits, responded, groups = [], 0, 0
        for prompt in prompts:
            variants = swapped_prompts(prompt, attribute)
            for seed in seeds:
                measured = [getattr(measure(video), attribute) for video in sample_fn(variants, seed)]
                hits += [m == v for m, v in zip(measured, VALUES[attribute], strict=True)]
                responded += len(set(measured)) > 1
                groups += 1
        report[attribute] = {
            "follows": float(np.mean(hits)),
            "chance": 1 / len(VALUES[attribute]),
            "responds": responded / groups,
            "groups": groups,
        }
    return report
