"""Build rewards by name (``"aesthetic"``) or weighted dict (``{"aesthetic": 1, "clip": 0.5}``).

Registering a custom reward
---------------------------
A **class** (or any factory) is called with the options given to :func:`build_reward`::

    @register_reward("saturation")
    class Saturation:
        differentiable = True
        needs_prompts = False

        def __init__(self, target: float = 0.5):
            self.target = target

        def __call__(self, frames, prompts):            # frames (B, F, 3, H, W) in [0, 1]
            sat = frames.amax(dim=2) - frames.amin(dim=2)
            return -(sat.mean(dim=(1, 2, 3)) - self.target).abs()   # (B,)

    build_reward("saturation", target=0.3)

A plain **function** ``fn(frames, prompts, **options) -> (B,)`` is wrapped; the options given to
``build_reward`` are passed to it on every call::

    @register_reward("mid_gray", needs_prompts=False)
    def mid_gray(frames, prompts, target: float = 0.5):
        return -(frames.mean(dim=(1, 2, 3, 4)) - target).abs()

Built instances get ``name`` (the registered name) and ``differentiable`` / ``needs_prompts``
(from the decorator) when they do not define them. ``rlr-video reward --import MODULE`` imports
a module of such registrations before building.

Dict specs
----------
``{name: weight}`` or ``{name: {"weight": w, **options}}`` builds a weighted sum
(:class:`rewards.composite.CompositeReward`). An entry may carry ``"reward": NAME`` to use its
key as a label, so one reward can appear twice with different options::

    {"clip": 1.0, "clip_l14": {"reward": "clip", "weight": 0.5, "model": "ViT-L-14"}}
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from rewards.base import Reward


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Any]
    differentiable: bool
    needs_prompts: bool


_REGISTRY: dict[str, _Entry] = {}


class FunctionReward:
    """Adapts ``fn(frames, prompts, **options)`` to the :class:`~rewards.base.Reward` protocol."""

    def __init__(
        self,
        fn: Callable[..., Tensor],
        name: str,
        differentiable: bool = True,
        needs_prompts: bool = True,
        **options: Any,
    ) -> None:
        self.fn = fn
        self.name = name
        self.differentiable = differentiable
        self.needs_prompts = needs_prompts
        self.options = options

    def __call__(self, frames: Tensor, prompts: Sequence[str]) -> Tensor:
        return self.fn(frames, prompts, **self.options)

    def __repr__(self) -> str:
        return f"FunctionReward({self.name!r}, options={self.options})"


def as_reward(reward: Callable[..., Tensor]) -> Reward:
    """``reward`` as a :class:`~rewards.base.Reward`: an object that already has ``name`` and
    ``differentiable`` passes through; a plain callable ``fn(frames, prompts) -> (B,)`` is
    wrapped in a :class:`FunctionReward` named by its ``__name__``, with
    ``differentiable=True``: it is assumed to be written in torch operations that gradients
    flow through (as first-order estimators need). Wrap it yourself,
    ``FunctionReward(fn, "name", differentiable=False)``, if it is not.
    """
    if isinstance(reward, Reward):
        return reward
    if not callable(reward):
        raise TypeError(f"a reward is a callable (frames, prompts) -> (B,) scores; got {type(reward).__name__}")
    return FunctionReward(
        reward,
        getattr(reward, "__name__", type(reward).__name__),
        getattr(reward, "differentiable", True),
        getattr(reward, "needs_prompts", True),
    )


def register_reward(
    name: str,
    obj: Callable[..., Any] | None = None,
    *,
    factory: Callable[..., Any] | None = None,
    differentiable: bool = True,
    needs_prompts: bool = True,
    overwrite: bool = False,
) -> Callable[..., Any]:
    """Register a reward class or scoring function under ``name`` (usable as a decorator).

    - a class (or ``factory=``): ``build_reward(name, **options)`` calls it with the options;
    - a function: it is the score itself, ``fn(frames, prompts, **options) -> (B,)``.

    ``differentiable`` and ``needs_prompts`` fill in the attributes the built object lacks.
    Registering a taken name raises unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"a reward name must be a non-empty string, got {name!r}")

    def add(target: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"a reward named {name!r} is already registered; pass overwrite=True to replace it")
        if factory is not None:
            make = factory
        elif inspect.isclass(target):
            make = target
        else:

            def make(**options: Any) -> FunctionReward:
                return FunctionReward(target, name, differentiable, needs_prompts, **options)

            make.__signature__ = _options_signature(target)  # type: ignore[attr-defined]
        _REGISTRY[name] = _Entry(make, differentiable, needs_prompts)
        return target

    if factory is not None:
        add(factory)
        return factory
    return add if obj is None else add(obj)


def _options_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """The keyword options of ``fn(frames, prompts, **options)``: its parameters after the two."""
    params = list(inspect.signature(fn).parameters.values())[2:]
    return inspect.Signature(params)


def available_rewards() -> list[str]:
    """The registered reward names (plugins' included), sorted."""
    load_plugins()
    return sorted(_REGISTRY)


PLUGIN_GROUP = "rewards.plugins"
_PLUGINS_LOADED = False


def load_plugins() -> None:
    """Import, once, the modules other packages register rewards from: the entry points of the
    group ``rewards.plugins`` (``[project.entry-points."rewards.plugins"]`` in a pyproject.toml).
    The zoo depends on no package that extends it; a plugin that fails to import is a warning
    naming it, and the zoo's own rewards still work."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for point in entry_points(group=PLUGIN_GROUP):
        try:
            point.load()
        except Exception as err:  # noqa: BLE001 - one broken plugin must not break the zoo
            import warnings

            warnings.warn(f"reward plugin {point.name!r} ({point.value}) failed to load: {err}", stacklevel=2)


def _check_options(name: str, make: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Fail early, naming the reward and the option, not with a bare TypeError from deep inside."""
    try:
        sig = inspect.signature(make)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in options:
        if key not in accepted:
            hint = difflib.get_close_matches(key, accepted, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise TypeError(
                f"reward {name!r} has no option {key!r}{did_you_mean}; its options are: {', '.join(accepted) or 'none'}"
            )


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        load_plugins()
    if name not in _REGISTRY:
        hint = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise KeyError(f"unknown reward {name!r}.{did_you_mean} Registered: {', '.join(available_rewards())}")
    return _REGISTRY[name]


def _build_one(name: str, options: Mapping[str, Any]) -> Reward:
    entry = _entry(name)
    _check_options(name, entry.factory, options)
    reward = entry.factory(**options)
    for attr, default in (
        ("name", name),
        ("differentiable", entry.differentiable),
        ("needs_prompts", entry.needs_prompts),
    ):
        if not hasattr(reward, attr):
            setattr(reward, attr, default)
    if not callable(reward):
        raise TypeError(f"reward {name!r} built a {type(reward).__name__}, which is not callable")
    return reward


def _parse_term(label: str, value: Any) -> tuple[str, float, dict[str, Any]]:
    """One dict-spec entry → (registered name, weight, options)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Mapping)):
        raise TypeError(f"reward spec entry {label!r}: expected a weight (number) or a dict of options, got {value!r}")
    if not isinstance(value, Mapping):
        return label, float(value), {}
    options = dict(value)
    weight = options.pop("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"reward spec entry {label!r}: weight must be a number, got {weight!r}")
    return str(options.pop("reward", label)), float(weight), options


def _dict_terms(spec: Mapping[str, Any]) -> list[tuple[str, str, float, dict[str, Any]]]:
    """(label, registered name, weight, options) of each entry of a dict spec."""
    if not spec:
        raise ValueError("empty reward spec: name at least one reward")
    return [(str(label), *_parse_term(str(label), value)) for label, value in spec.items()]


def reward_sizes(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """A weight-free stand-in for reward ``name`` built with ``options``, for costing it without its
    weights (``rlr-video plan``): what its class's ``sizes(**options)`` returns (videoalign, temporal
    with DINO), or None when it declares none."""
    sizes = getattr(_entry(name).factory, "sizes", None)
    return sizes(**dict(options or {})) if callable(sizes) else None


def check_reward_spec(spec: str | Mapping[str, Any]) -> None:
    """Raise what :func:`build_reward` would for an unknown name, a bad weight or an unknown
    option, without building anything: configs are checked before any model loads."""
    terms = [(spec, {})] if isinstance(spec, str) else [(name, options) for _, name, _, options in _dict_terms(spec)]
    for name, options in terms:
        _check_options(name, _entry(name).factory, options)


def build_reward(spec: str | Mapping[str, Any] | Reward, **options: Any) -> Reward:
    """Build a reward from a name or a ``{name: weight | {weight, **options}}`` dict.

    A reward object passes through unchanged; a plain callable is wrapped by :func:`as_reward`.

    ``options`` go to the named reward's constructor (e.g. ``model=``, ``pretrained=``,
    ``chunk_size=``, ``sample_frames=``); a dict spec carries its options per entry instead.
    """
    if isinstance(spec, str):
        return _build_one(spec, options)
    if isinstance(spec, Mapping):
        if options:
            raise TypeError(
                "options for a dict spec go inside it, e.g. "
                "{'clip': {'weight': 0.5, 'model': 'ViT-B-32'}}; "
                f"got extra options {sorted(options)}"
            )
        from rewards.composite import CompositeReward

        terms = []
        for label, name, weight, term_options in _dict_terms(spec):
            reward = _build_one(name, term_options)
            if label != name:
                reward.name = label
            terms.append((weight, reward))
        if len(terms) == 1 and terms[0][0] == 1.0:
            return terms[0][1]
        return CompositeReward(terms)
    if callable(spec) and not options:
        return as_reward(spec)
    raise TypeError(f"cannot build a reward from {spec!r}: expected a name, a dict or a Reward")
