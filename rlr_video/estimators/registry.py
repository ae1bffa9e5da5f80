"""Estimators by name: each estimator file registers its class with its own config dataclass.

An estimator file declares everything the rest of the package needs from it::

    @dataclass
    class MyConfig(EstimatorConfig):
        # the ``estimator:`` section when ``name: mine``; every key documented here

        name: str = "mine"
        steps: int = field(default=1, metadata=bounds(1))

        def validate(self, run: RunContext) -> None: ...   # cross-field rules (ConfigError)
        def build(self, run: RunContext) -> Estimator: ...  # the configured estimator
        def workload(self, run: RunContext) -> Workload: ...  # optional: what one update runs,
                                                               # for the memory planner to cost


    @register_estimator("mine", MyConfig)
    class Mine(BaseEstimator):
        def estimate(self, backbone, reward, prompts, generator, reward_offset=None) -> Estimate: ...

The config schema (``rlr_video.config``) builds the ``estimator`` section with the class its
``name`` registers, the trainer builds the estimator from it and saves its ``state_dict`` in
checkpoints: none of them names an estimator. Every module of this package is imported on the
first look-up, so a new file registers itself; a user's own module registers on import
(``rlr-video train --import MODULE``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor

from rlr_video.errors import ConfigError

if TYPE_CHECKING:
    from rlr_video.memory.planner import Workload

DEFAULT_ESTIMATOR = "rlr"


def bounds(minimum: float | None = None, maximum: float | None = None) -> dict[str, float | None]:
    """Field metadata the config loader checks: ``field(default=2, metadata=bounds(1))``."""
    return {"min": minimum, "max": maximum}


@dataclass(frozen=True)
class RunContext:
    """The settings of the rest of a run that an estimator's config is checked and built against."""

    num_steps: int  # model.num_steps: T
    batch_size: int = 1  # train.batch_size: videos per micro-batch
    group_size: int = 1  # train.group_size: videos per prompt in a micro-batch
    grad_accum: int = 1  # train.grad_accum
    prompt_baseline: bool = True  # train.prompt_baseline: rewards arrive centred per prompt
    ho_stage: str | None = None  # prompts.ho_stage (multi-scale prompts)
    memory_budget: bool = False  # memory.budget is set: the planner chooses settings
    memory_checkpoint: str = "auto"  # memory.checkpoint


@dataclass
class Estimate:
    """What one ``estimate`` call did, besides adding -grad E[R] to ``p.grad``.

    Attributes:
        stats: diagnostics (part norms, denoiser calls, clip fractions ...), floats.
        rewards: (B,) the batch's rewards as the reward returned them (float32, CPU), before
            any ``reward_offset``; for a reused batch, the rewards it was sampled with.
        terms: each term of a composite reward, (B,) each; ``{reward name: rewards}`` otherwise.
        skipped: a reward was NaN or infinite: nothing was added to ``p.grad``.
        fresh: the batch was sampled by this call (False when an earlier one was reused).
    """

    stats: dict[str, float]
    rewards: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    skipped: bool = False
    fresh: bool = True

    @property
    def reward_mean(self) -> float:
        finite = self.rewards[torch.isfinite(self.rewards)]
        return float(finite.double().mean()) if len(finite) else float("nan")


class Estimator(Protocol):
    """Adds an estimate of -grad_theta E[R] (the loss gradient) to ``p.grad`` of the backbone's
    trainable parameters. ``reward_offset`` (B,) is subtracted from the rewards wherever they
    become advantages (a baseline the caller keeps, e.g. the trainer's per-prompt running mean);
    it never changes a pathwise gradient."""

    def estimate(
        self, backbone, reward, prompts: Sequence[str], generator: torch.Generator, reward_offset: Tensor | None = None
    ) -> Estimate: ...


class BaseEstimator:
    """Defaults every registered estimator shares: no state, a fresh batch per update.

    ``updates_per_batch``: consecutive updates that reuse one sampled batch (PPO's inner
    epochs); the trainer gives the same prompts that many times. ``state_dict`` holds what a
    resumed run needs to continue exactly, as tensors and plain Python values only (checkpoints
    are read with ``torch.load(weights_only=True)``).
    """

    name: ClassVar[str] = ""
    updates_per_batch: int = 1

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, but the checkpoint has {sorted(state)}")


@dataclass
class EstimatorConfig:
    """Base of every estimator's config section. ``name`` selects the registered estimator."""

    name: str = DEFAULT_ESTIMATOR
    # Whether the memory planner (memory.budget, memory.checkpoint: call) can choose its settings.
    planned: ClassVar[bool] = False
    # Whether multi-scale prompts may restrict it to one stage of the chain (prompts.ho_stage).
    accepts_stages: ClassVar[bool] = False

    def validate(self, run: RunContext) -> None:
        """Cross-field rules against the rest of the run; raise ``ConfigError`` naming the key."""
        if self.planned:
            return
        costed = self.workload(run) is not None
        if run.memory_budget and not costed:
            allowed = f"null with estimator.name={self.name} (the planner picks RLR's h)"
            raise ConfigError("memory.budget", "set", allowed)
        if run.memory_checkpoint == "call" and not costed:
            raise ConfigError("memory.checkpoint", "call", f"auto, none or block with estimator.name={self.name}")

    def workload(self, run: RunContext) -> Workload | None:
        """What one update runs, for an estimator whose settings the planner does not choose:
        the memory planner then costs it (``rlr-video plan``, ``memory.budget`` picks only the
        checkpointing and frame chunks). None: not costed (memory.budget refused), unless
        ``planned``."""
        return None

    def build(self, run: RunContext) -> Estimator:
        raise NotImplementedError


_ESTIMATORS: dict[str, tuple[type, type[EstimatorConfig]]] = {}
_DISCOVERED = False


def register_estimator(name: str, config: type[EstimatorConfig]):
    """Class decorator: register an estimator class under ``name`` with its config dataclass."""
    if not (dataclasses.is_dataclass(config) and issubclass(config, EstimatorConfig)):
        raise TypeError(f"register_estimator({name!r}): {config!r} is no EstimatorConfig dataclass")

    def decorate(cls: type) -> type:
        if name in _ESTIMATORS and _ESTIMATORS[name][0].__qualname__ != cls.__qualname__:
            raise ValueError(f"estimator {name!r} is registered twice ({_ESTIMATORS[name][0]} and {cls})")
        cls.name = name
        _ESTIMATORS[name] = (cls, config)
        return cls

    return decorate


def _discover() -> None:
    """Import every module of this package once: estimator files register themselves."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{info.name}")


def available_estimators() -> list[str]:
    _discover()
    return sorted(_ESTIMATORS)


def estimator_class(name: str) -> type:
    return _lookup(name)[0]


def config_class(name: str, key: str = "estimator.name") -> type[EstimatorConfig]:
    """The config dataclass registered for ``name``; a ``ConfigError`` naming ``key`` otherwise."""
    return _lookup(name, key)[1]


def _lookup(name: str, key: str = "estimator.name") -> tuple[type, type[EstimatorConfig]]:
    _discover()
    if name not in _ESTIMATORS:
        close = difflib.get_close_matches(str(name), list(_ESTIMATORS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(key, name, f"{', '.join(sorted(_ESTIMATORS))}{hint}")
    return _ESTIMATORS[name]


def all_config_keys() -> set[str]:
    """Every key of every registered estimator's config: keys of another estimator than the
    chosen one are left out of its section rather than refused (a preset switched to another
    estimator with ``estimator.name=...`` keeps working)."""
    _discover()
    return {f.name for _, cfg in _ESTIMATORS.values() for f in dataclasses.fields(cfg)}
