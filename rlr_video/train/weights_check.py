"""Before a run loads its model: every weight file the config needs, the missing ones named at once.

Loading stops at the first missing file, so a user fetching a preset's weights one error at a
time meets the base model, then the motion adapter, then each reward model. ``check_weights``
resolves them all first (through the Hugging Face cache, or the hub where it can be reached, as
the loaders do) and raises one ``MissingWeights`` listing every missing one with the line that
fetches it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rewards import MissingWeightsError

# Component folders a diffusers backbone loads weights for (the tokenizer and scheduler have none).
_MODEL_FOLDERS = ("unet", "transformer", "transformer_2", "vae", "text_encoder")  # transformer_2: a second expert
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class MissingWeights(MissingWeightsError):
    """Weights a run needs that are not on this machine: one line each, with how to fetch them."""

    def __init__(self, items: list[tuple[str, str]], unreachable: bool = False):
        from huggingface_hub import constants

        width = max(len(what) for what, _ in items)
        lines = [f"{len(items)} of the weights this run needs are not on this machine:"]
        lines += [f"  {what:<{width}}  {fetch}" for what, fetch in items]
        if constants.HF_HUB_OFFLINE:
            lines.append("  (HF_HUB_OFFLINE is set: with the hub in reach, unset it and they download on first use)")
        elif unreachable:
            lines.append("  (the hub cannot be reached from here: fetch them where it can, or copy the cache here)")
        super().__init__("\n".join(lines), items)


def check_weights(config) -> None:
    """Raise ``MissingWeights`` naming every missing weight the config's model and rewards need
    (the training reward and the held-out ones of ``train.eval``)."""
    items, unreachable = _missing_model_weights(config.model)
    with _offline(unreachable):  # a hub that did not answer is not asked again (each ask retries for a minute)
        items += _missing_reward_weights(config.reward)
        heldout = config.train.eval
        if heldout is not None and heldout.reward is not None:
            items += _missing_reward_weights(heldout.reward, "held-out reward")
    if items:
        raise MissingWeights(items, unreachable)


@contextlib.contextmanager
def _offline(on: bool) -> Iterator[None]:
    """Inside, the Hugging Face functions read only the cache when ``on``."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or on
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _missing_model_weights(model) -> tuple[list[tuple[str, str]], bool]:
    """(missing items, whether the hub could not be reached) of the model and its adapter."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    from rlr_video.backbones.layout import BackboneLoadError, looks_like_hub_id, resolve_source

    if model.toy is not None:
        return [], False
    sources = [("model", str(model.path))]
    if model.options.get("motion_adapter"):
        sources.append(("motion adapter", str(model.options["motion_adapter"])))
    items, unreachable = [], False
    for what, source in sources:
        hub = looks_like_hub_id(source) and not Path(source).expanduser().exists()
        fetch = f"hf download {source}" if hub else "save the whole model there (save_pretrained)"
        try:
            with _offline(unreachable):
                folder = resolve_source(source)
        except BackboneLoadError as err:
            if not hub:
                raise  # a path that is not there is a config error, reported as it always was
            items.append((what, fetch))
            # snapshot_download's error when the hub does not answer (offline, it is the cache miss)
            unreachable |= isinstance(err.__cause__, LocalEntryNotFoundError) and not constants.HF_HUB_OFFLINE
            continue
        empty = _weightless(folder)
        if empty:  # e.g. a cache holding only the configs a memory plan needs
            items.append((f"{what} ({empty})", fetch))
    return items, unreachable


def _weightless(folder: Path) -> str | None:
    """What of a layout (its model folders) or of a single model folder holds a ``config.json``
    but no weight file, or None when every model has its weights."""
    models = [name for name in _MODEL_FOLDERS if (folder / name / "config.json").is_file()]
    if models:
        empty = [f"{name}/" for name in models if not _has_weights(folder / name)]
        return f"configs only: {', '.join(empty)}" if empty else None
    return "configs only" if (folder / "config.json").is_file() and not _has_weights(folder) else None


def _has_weights(folder: Path) -> bool:
    return any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir())


def _missing_reward_weights(spec: str | Mapping[str, Any], what: str = "reward") -> list[tuple[str, str]]:
    """Each reward term built on its own (the models load once per process, so the trainer's
    build reuses them), so one missing term does not hide another's."""
    from rewards import build_reward

    terms = [(spec, spec)] if isinstance(spec, str) else [(label, {label: value}) for label, value in spec.items()]
    items = []
    for label, term in terms:
        try:
            build_reward(term)
        except MissingWeightsError as err:
            found = err.items or [("weights", str(err).splitlines()[0])]
            items += [(f"{what} {label}: {item}", fetch) for item, fetch in found]
    return items
