"""Cross-field checks of a whole ``Config`` that need no model: they run before anything heavy
loads. The estimator's own rules are its config class's ``validate`` (``rlr_video.estimators``)."""

from __future__ import annotations

import difflib
import importlib.util
from typing import Any

from rlr_video.config.schema import Config
from rlr_video.errors import ConfigError
from rlr_video.estimators.registry import RunContext


def validate(config: Config) -> None:
    """Cross-field checks that need no model: they run before anything heavy loads."""
    m, p = config.model, config.prompts
    if (m.toy is None) == (m.path is None):
        raise ConfigError("model", {"toy": m.toy, "path": m.path}, "exactly one of model.toy or model.path")
    if m.toy is not None and (len(m.toy.latent_shape) != 4 or min(m.toy.latent_shape) < 1):
        raise ConfigError("model.toy.latent_shape", m.toy.latent_shape, "4 positive integers [C, F, H, W]")
    t = config.train
    if t.batch_size % t.group_size:
        raise ConfigError("train.group_size", t.group_size, f"a divisor of train.batch_size ({t.batch_size})")
    if len(config.optim.betas) != 2 or not all(0 <= b < 1 for b in config.optim.betas):
        raise ConfigError("optim.betas", config.optim.betas, "two numbers in [0, 1)")
    _validate_reward("reward", config.reward)
    if config.render.reward is not None:
        _validate_reward("render.reward", config.render.reward)
    _validate_prompts(config)
    if t.eval is not None:
        _validate_eval(t.eval)
    if p.ho_stage is not None and not config.estimator.accepts_stages:
        raise ConfigError("prompts.ho_stage", p.ho_stage, f"null with estimator.name={config.estimator.name}")
    _validate_memory(config)
    config.estimator.validate(run_context(config))
    for name in t.log_with:
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                "train.log_with", t.log_with, f"trackers whose package is installed (pip install {module})"
            )


def _validate_memory(config: Config) -> None:
    from rlr_video.memory.budget import FORMAT, parse_size  # no torch

    budget = config.memory.budget
    if budget is not None:
        try:
            parse_size(budget)
        except ValueError:
            raise ConfigError("memory.budget", budget, FORMAT) from None


def run_context(config: Config) -> RunContext:
    """What the estimator's config is checked and built against: the rest of the run."""
    t = config.train
    return RunContext(
        num_steps=config.model.num_steps,
        batch_size=t.batch_size,
        group_size=t.group_size,
        grad_accum=t.grad_accum,
        prompt_baseline=t.prompt_baseline,
        ho_stage=config.prompts.ho_stage,
        memory_budget=config.memory.budget is not None,
        memory_checkpoint=config.memory.checkpoint,
    )


def _validate_reward(key: str, spec: str | dict[str, Any]) -> None:
    from rewards import available_rewards, check_reward_spec  # registers names only: no model loads

    if isinstance(spec, str):
        names = [spec]
    else:
        names = [v.get("reward", k) if isinstance(v, dict) else k for k, v in spec.items()]
    if not names:
        raise ConfigError(key, spec, "a reward name or a non-empty {name: weight} mapping")
    known = set(available_rewards())
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            imports = "; custom rewards: register them in a module and pass --import MODULE"
            raise ConfigError(key, name, f"{', '.join(sorted(known))}{hint}{imports}")
    try:  # options and weights, checked against each reward's signature
        check_reward_spec(spec)
    except (TypeError, ValueError) as err:
        raise ConfigError(key, spec, str(err)) from None


# Metrics keys of ``train.eval`` besides each held-out reward's own (rlr_video.train.evaluation).
EVAL_RESERVED = ("total", "training_reward")


def _validate_eval(e) -> None:
    """``train.eval``: a held-out reward spec, and exactly one source of held-out prompts."""
    from rlr_video.prompts import PROMPT_FILE_TYPES_TEXT, PromptError, load_prompts

    if e.reward is None:
        raise ConfigError(
            "train.eval.reward", None, "a reward spec like `reward` (the held-out rewards, e.g. truth on the testbed)"
        )
    _validate_reward("train.eval.reward", e.reward)
    labels = [e.reward] if isinstance(e.reward, str) else list(e.reward)
    for label in labels:
        if label in EVAL_RESERVED:
            raise ConfigError(
                "train.eval.reward", label, f"labels other than {', '.join(EVAL_RESERVED)} (metrics keys)"
            )
    if (e.path is None) == (not e.items):
        raise ConfigError(
            "train.eval", {"path": e.path, "items": e.items}, "exactly one of train.eval.path or train.eval.items"
        )
    if e.path is not None:
        try:
            load_prompts(e.path)
        except PromptError as err:
            raise ConfigError(
                "train.eval.path", e.path, f"a readable {PROMPT_FILE_TYPES_TEXT} prompt file ({err})"
            ) from None


def _validate_prompts(config: Config) -> None:
    from rlr_video.prompts import PROMPT_FILE_TYPES_TEXT, PromptError, load_prompts

    p = config.prompts
    if (p.path is None) == (not p.items):
        raise ConfigError("prompts", {"path": p.path, "items": p.items}, "exactly one of prompts.path or prompts.items")
    try:
        prompts = load_prompts(p.path) if p.path is not None else p.items
    except PromptError as err:
        raise ConfigError("prompts.path", p.path, f"a readable {PROMPT_FILE_TYPES_TEXT} prompt file ({err})") from None
    if p.ho_stage is not None and not any(isinstance(q, tuple) for q in prompts):
        raise ConfigError(
            "prompts.ho_stage", p.ho_stage, "null unless the prompts are multi-scale (JSONL coarse/mid/fine)"
        )
