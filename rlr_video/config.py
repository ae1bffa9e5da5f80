"""The typed schema of a training / rendering run, loaded from YAML presets with overrides.

A run is described by one YAML file (a preset shipped in ``rlr_video/configs/`` or the user's own) plus
``key=value`` overrides from the command line (``estimator.h=3``, ``reward={clip: 1}``).
``load_config`` parses both with omegaconf, checks every key and value against the dataclasses
below and returns a ``Config``. It touches no model, so a broken config fails in milliseconds,
before anything heavy loads. Every error names the key, the bad value and what is allowed.

A relative ``prompts.path`` written inside a YAML file resolves against that file's folder (so
presets ship their prompt files next to them); when no such file is there, against the presets'
folder, so a preset copied elsewhere keeps its shipped prompt lists. Given as an override, it
resolves against the current directory. Output folders (``train.output_dir``,
``render.output_dir``) are always relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

# Where presets live (package data, so a wheel ships them): ``rlr-video train tiny-shapes``
# means ``rlr_video/configs/tiny-shapes.yaml``.
PRESET_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_PRESET = "tiny-shapes"

FAMILIES = ("animatediff", "modelscope", "cogvideox", "wan")


class ConfigError(ValueError):
    """An invalid config value: ``key`` (dotted), the offending ``value`` and what is ``allowed``."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"config key '{key}': {value!r} is not valid; allowed: {allowed}")


class ConfigFileError(ConfigError):
    """A config file that YAML or omegaconf cannot read: the message names the file, the line
    (where known) and the key (where known)."""

    def __init__(self, path: Path, line: int | None, key: str | None, reason: str):
        self.path, self.line = path, line
        self.key, self.value, self.allowed = key, None, reason
        where = f"{path}:{line}" if line else str(path)
        ValueError.__init__(self, f"{where}: {f'config key {key!r}: ' if key else ''}{reason}")


class UnknownConfigError(ConfigError):
    """CONFIG (the first argument) is neither a YAML file nor a preset: the message says what
    was given and lists the presets; it is no config key, so it does not pretend to be one."""

    def __init__(self, given: str, presets: list[str], close: str | None):
        self.key, self.value, self.allowed = "CONFIG", given, f"a YAML file or a preset: {', '.join(presets)}"
        hint = f" (did you mean '{close}'?)" if close else ""
        ValueError.__init__(self, f"no preset or YAML file named {given!r}{hint}; presets: {', '.join(presets)}")


def _meta(minimum: float | None = None, maximum: float | None = None, doc: str = "") -> dict:
    return {"min": minimum, "max": maximum, "doc": doc}


@dataclass
class ToyConfig:
    """The tiny test backbone (``rlr_video.backbones.toy``), used until the testbed model ships."""

    latent_shape: list[int] = field(default_factory=lambda: [2, 4, 8, 8])  # C, F, H, W
    hidden: int = field(default=8, metadata=_meta(1))
    seed: int = 0  # initial weights (every process builds the same model from it)


@dataclass
class ModelConfig:
    """Which video model to fine-tune. Set exactly one of ``toy`` or ``path``.

    ``path`` is a local diffusers folder or a hub id handed to
    ``rlr_video.backbones.load_backbone`` with the options below; ``family`` skips layout
    detection. ``options`` passes extra family-specific keyword arguments through unchanged.
    """

    toy: ToyConfig | None = None
    path: str | None = None
    family: Literal["animatediff", "modelscope", "cogvideox", "wan"] | None = None
    num_steps: int = field(default=25, metadata=_meta(2))
    eta: float = field(default=1.0, metadata=_meta(0.0))  # DDIM eta, or the flow SDE noise level
    guidance_scale: float = field(default=7.5, metadata=_meta(0.0))
    negative_prompt: str | None = None
    height: int | None = field(default=None, metadata=_meta(8))
    width: int | None = field(default=None, metadata=_meta(8))
    frames: int | None = field(default=None, metadata=_meta(1))
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora_rank: int = field(default=8, metadata=_meta(1))
    lora_alpha: float | None = field(default=None, metadata=_meta(0.0))
    lora_targets: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EstimatorConfig:
    """Which gradient estimator (``rlr_video.estimators``) and its settings.

    Keys that do not apply to the chosen ``name`` are ignored (``K`` only matters for
    ``truncated_bp``, ``ppo_clip`` only for ``lr``, ...). ``baseline: running`` and
    ``j: grad_norm`` keep statistics inside each process's estimator (saved per process in
    checkpoints), so unlike ``train.prompt_baseline`` they differ between process counts.
    """

    name: Literal["rlr", "full_bp", "truncated_bp", "lr"] = "rlr"
    # rlr: denoiser calls of the half-order sub-chain; 0 drops HO (its steps go to ZO: the
    # paper's "w/o HO" ablation, still unbiased with zo: latent_lr).
    h: int = field(default=2, metadata=_meta(0))
    # rlr: the last steps taken pathwise (1 in the paper). Their LR terms would have the
    # smallest noise std and so the largest variance; backprop through them is cheap there.
    fo_steps: int = field(default=1, metadata=_meta(1))
    zo: Literal["latent_lr", "param_es", "none"] = "latent_lr"
    # rlr, latent_lr: ZO steps sampled per update (null: all). More than the steps that h and
    # fo_steps leave means all of them, so changing h (or a memory plan) needs no change here.
    zo_samples: int | None = field(default=None, metadata=_meta(1))
    j: Literal["uniform", "grad_norm"] | list[int] = "uniform"
    baseline: Literal["loo", "group", "running", "none"] = "loo"
    # rlr, lr: per step t, subtract the reward of the denoiser's clean estimate x0_hat(x_t)
    # before the baseline above (a state-dependent control variate: unbiased, one decode and
    # reward call per scored step, no denoiser call). Needs baseline loo or group, batch >= 3.
    state_baseline: bool = False
    normalize: bool = False
    es_sigma: float = field(default=1e-3, metadata=_meta(0.0))
    K: int = field(default=1, metadata=_meta(1))
    randomized: bool = False
    ppo_clip: float | None = field(default=None, metadata=_meta(0.0))
    inner_epochs: int = field(default=1, metadata=_meta(1))


@dataclass
class PromptsConfig:
    """Training prompts: a file (``.txt``, one per line, ``.jsonl`` or ``.csv``) or an inline list.

    A JSONL line is ``{"prompt": "..."}`` or a multi-scale prompt
    ``{"coarse": "...", "mid": "...", "fine": "..."}``: each part conditions its third of the
    denoising steps (coarse the noisiest). With multi-scale prompts, ``ho_stage`` restricts
    the RLR half-order start j to that third (the paper's "Diffusive Chain-of-Thought").
    """

    path: str | None = None
    items: list[str] = field(default_factory=list)
    shuffle: bool = True
    ho_stage: Literal["coarse", "mid", "fine"] | None = None


@dataclass
class OptimConfig:
    """AdamW on the trainable (LoRA) parameters, with global-norm gradient clipping."""

    lr: float = field(default=1e-4, metadata=_meta(0.0))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = field(default=1e-2, metadata=_meta(0.0))
    eps: float = field(default=1e-8, metadata=_meta(0.0))
    max_grad_norm: float | None = field(default=1.0, metadata=_meta(0.0))


@dataclass
class TrainConfig:
    """The optimisation loop. One step is one optimizer update of
    ``batch_size x grad_accum x processes`` videos."""

    steps: int = field(default=100, metadata=_meta(1))
    batch_size: int = field(default=1, metadata=_meta(1))  # videos per micro-batch per process
    # videos per prompt in a micro-batch (GRPO-style groups; pair with estimator.baseline: group)
    group_size: int = field(default=1, metadata=_meta(1))
    grad_accum: int = field(default=1, metadata=_meta(1))  # micro-batches per update
    mixed_precision: Literal["no", "bf16"] = "no"
    # fsdp: the denoiser's frozen weights sharded over the processes (rlr_video.backbones.sharding)
    sharding: Literal["none", "fsdp"] = "none"
    seed: int = 0
    output_dir: str = "runs/rlr-video"
    checkpoint_every: int = field(default=50, metadata=_meta(1))
    keep_last: int = field(default=3, metadata=_meta(1))
    log_with: list[Literal["tensorboard", "wandb"]] = field(default_factory=list)
    project: str = "rlr-video"  # tracker project / run group name
    prompt_baseline: bool = True  # subtract a running per-prompt reward mean (unbiased)
    baseline_window: int = field(default=32, metadata=_meta(1))  # rewards remembered per prompt
    progress: bool = True


@dataclass
class RenderConfig:
    """``rlr-video render``: fixed seeds so every column (base, each LoRA) is comparable."""

    seed: int = 0
    batch_size: int = field(default=4, metadata=_meta(1))
    fps: int = field(default=8, metadata=_meta(1))
    reward: str | dict[str, float | dict[str, Any]] | None = None  # scores in the gallery; None: the training reward
    contact_frames: int = field(default=8, metadata=_meta(1))  # frames per row of a contact sheet
    output_dir: str | None = None  # None: <train.output_dir>/render


@dataclass
class MemoryConfig:
    """Memory planning (``rlr_video.memory``; ``rlr-video plan`` prints the same plan).

    With ``budget`` set, the trainer predicts each setting's peak memory and picks the largest
    RLR ``h`` that fits (``estimator.h`` is replaced; ``max_h`` caps it), then the cheapest
    checkpointing and frame chunks; the ZO mode changes only if the configured one cannot fit.
    Without a budget, ``checkpoint`` and ``frame_chunk`` (if set) are applied as given.
    """

    budget: str | int | None = None  # "24GiB", "40GB", bytes, or "auto" (this GPU's free memory)
    max_h: int | None = field(default=None, metadata=_meta(1))  # largest h to plan (None: num_steps - 1)
    checkpoint: Literal["auto", "none", "block", "call"] = "auto"  # auto: the planner's choice
    frame_chunk: int | None = field(default=None, metadata=_meta(1))  # images of B*F per chunk (None: planner's)
    probe: bool = False  # calibrate the cost model with one measured call before planning


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    # a name, {name: weight}, or {label: {reward: name, weight: w, **options}} (as rewards.build_reward)
    reward: str | dict[str, float | dict[str, Any]] = "brightness"
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


def resolve_config_path(name_or_path: str | None) -> Path:
    """A YAML path, or a preset name from ``rlr_video/configs/`` (``None``: the CPU default)."""
    if name_or_path is None:
        name_or_path = DEFAULT_PRESET
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(Path(name_or_path).stem, presets, n=1)
    raise UnknownConfigError(str(name_or_path), presets, close[0] if close else None)


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a preset or YAML file, apply ``key=value`` overrides, validate, return a ``Config``."""
    path = resolve_config_path(None if name_or_path is None else str(name_or_path))
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError("<root>", raw, f"a mapping of sections in {path}")
    _resolve_paths(raw, path.parent)
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    return from_dict(raw)


def _read_yaml(path: Path) -> Any:
    """The file's contents with ``${...}`` interpolations resolved; a syntax error or an
    unresolvable interpolation raises a one-line ``ConfigFileError``, not a parser traceback."""
    import yaml
    from omegaconf import OmegaConf  # only config loading needs it
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    except yaml.YAMLError as err:
        raise yaml_error(path, err) from None
    except OmegaConfBaseException as err:  # an interpolation that does not resolve
        key = str(err.full_key) if getattr(err, "full_key", None) else None
        reason = str(err).splitlines()[0]
        raise ConfigFileError(path, _key_line(path, key) if key else None, key, reason) from None


def yaml_error(path: Path, err: Exception) -> ConfigFileError:
    """A ``yaml.YAMLError`` in ``path`` as one line: the line where the broken construct (and
    so its key) starts, and that line's text."""
    mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)
    if mark is None:
        return ConfigFileError(path, None, None, f"invalid YAML: {err}")
    text = path.read_text(encoding="utf-8").splitlines()[mark.line].strip()
    reason = ", ".join(r for r in (err.context, err.problem) if r)
    return ConfigFileError(path, mark.line + 1, None, f"invalid YAML near {text!r}: {reason}")


def _key_line(path: Path, key: str) -> int | None:
    """The line of dotted ``key`` in a YAML file that parses (None if it is not found)."""
    import yaml

    node, line = yaml.compose(path.read_text(encoding="utf-8")), None
    for part in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if k.value == part), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a ``Config`` from plain nested dicts."""
    config = _build(Config, raw, "")
    validate(config)
    return config


def _parse_override(item: str) -> tuple[str, Any]:
    from omegaconf import OmegaConf

    if "=" not in item or item.startswith("="):
        raise ConfigError(item, item, "overrides of the form key=value, e.g. estimator.h=3")
    key = item.split("=", 1)[0].strip()
    try:  # omegaconf's grammar: numbers, bools, null, [lists], {dicts}, quoted strings
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={item.split('=', 1)[1]}"]))
    except Exception as err:  # noqa: BLE001 - omegaconf raises several grammar errors
        raise ConfigError(key, item.split("=", 1)[1], f"a YAML value ({err})") from None
    return key, value["value"]


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), child, f"a section to set '{key}' inside")
        node = child
    node[parts[-1]] = value


# Keys holding file paths that resolve against the YAML file's folder.
_PATH_KEYS = (("prompts", "path"),)


def _resolve_paths(raw: dict, base: Path) -> None:
    """Relative paths against the YAML file's folder, else the presets' (a copied preset)."""
    for section, key in _PATH_KEYS:
        sub = raw.get(section)
        if isinstance(sub, dict) and isinstance(sub.get(key), str) and not Path(sub[key]).is_absolute():
            path = base / sub[key]
            if not path.exists() and (PRESET_DIR / sub[key]).is_file():
                path = PRESET_DIR / sub[key]
            sub[key] = str(path.resolve())


# --------------------------------------------------------------------------- typing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    if dataclasses.is_dataclass(tp):
        return f"a section with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return getattr(tp, "__name__", str(tp))


def _build(tp: Any, value: Any, key: str) -> Any:
    """Coerce ``value`` to type ``tp`` or raise a ``ConfigError`` naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key or "<root>", value, _type_name(tp))
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        for name in value:
            if name not in names:
                close = difflib.get_close_matches(str(name), names, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(_join(key, name), value[name], f"only the keys {', '.join(names)}{hint}")
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name], _join(key, f.name))
                _check_range(f, kwargs[f.name], _join(key, f.name))
        return tp(**kwargs)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(key, value, _type_name(tp))
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _build(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(key, value, _type_name(tp))
    if origin is Literal:
        choices = typing.get_args(tp)
        if value is False and "no" in choices:  # YAML 1.1 reads a bare `no` as false
            return "no"
        if value in choices and type(value) is type(choices[0]):
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(key, value, f"{', '.join(str(c) for c in choices)}{hint}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, value, _type_name(tp))
        (item_tp,) = typing.get_args(tp)
        return [_build(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, _type_name(tp))
        key_tp, val_tp = typing.get_args(tp)
        return {_build(key_tp, k, key): _build(val_tp, v, _join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, "an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, value, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "a string")
    raise TypeError(f"unsupported schema type {tp!r} at {key}")  # a bug in this file


def _check_range(f: dataclasses.Field, value: Any, key: str) -> None:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if value is None or not isinstance(value, int | float):
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = " and ".join(b for b in (lo is not None and f">= {lo}", hi is not None and f"<= {hi}") if b)
        raise ConfigError(key, value, f"numbers {bounds}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# --------------------------------------------------------------------------- validation


def validate(config: Config) -> None:
    """Cross-field checks that need no model: they run before anything heavy loads."""
    m, e, p, t = config.model, config.estimator, config.prompts, config.train
    if (m.toy is None) == (m.path is None):
        raise ConfigError("model", {"toy": m.toy, "path": m.path}, "exactly one of model.toy or model.path")
    if m.toy is not None and (len(m.toy.latent_shape) != 4 or min(m.toy.latent_shape) < 1):
        raise ConfigError("model.toy.latent_shape", m.toy.latent_shape, "4 positive integers [C, F, H, W]")
    T = m.num_steps
    if e.name == "rlr":
        fo = e.fo_steps
        if e.h > T - fo:
            raise ConfigError("estimator.h", e.h, f"0 ... {T - fo} (model.num_steps - fo_steps: those are FO)")
        if isinstance(e.j, list):
            lo, hi = fo + 1, T - e.h + 1
            if len(e.j) != 2 or not lo <= e.j[0] <= e.j[1] <= hi:
                raise ConfigError("estimator.j", e.j, f"uniform, grad_norm or [a, b] with {lo} <= a <= b <= {hi}")
    if t.batch_size % t.group_size:
        raise ConfigError("train.group_size", t.group_size, f"a divisor of train.batch_size ({t.batch_size})")
    if e.state_baseline and e.baseline not in ("loo", "group"):
        raise ConfigError("estimator.baseline", e.baseline, "loo or group with estimator.state_baseline")
    if e.state_baseline and t.batch_size < 3:
        raise ConfigError("train.batch_size", t.batch_size, ">= 3 with estimator.state_baseline (its slope)")
    if e.baseline == "group" and t.group_size < 2:
        raise ConfigError("estimator.baseline", e.baseline, "loo, running or none unless train.group_size >= 2")
    # Leave-one-out over a micro-batch of one has no other video to average: b = 0. Refused only
    # when nothing else centres the rewards; train.prompt_baseline's running mean still does.
    if e.name in ("rlr", "lr") and e.baseline == "loo" and t.batch_size == 1 and not t.prompt_baseline:
        raise ConfigError(
            "train.batch_size",
            t.batch_size,
            ">= 2 with estimator.baseline: loo (a batch of one has no others to leave out); "
            "or set estimator.baseline: running, or train.prompt_baseline: true",
        )
    if e.name == "rlr" and e.zo == "param_es" and e.es_sigma <= 0:
        raise ConfigError("estimator.es_sigma", e.es_sigma, "numbers > 0 with zo: param_es")
    if e.name == "lr" and e.inner_epochs > 1:
        if e.ppo_clip is None:
            raise ConfigError("estimator.inner_epochs", e.inner_epochs, "1 unless estimator.ppo_clip is set")
        if t.grad_accum != 1:  # the estimator keeps one batch to reuse, not one per micro-batch
            raise ConfigError("train.grad_accum", t.grad_accum, "1 when estimator.inner_epochs > 1")
    if e.name == "truncated_bp" and e.K > T:
        raise ConfigError("estimator.K", e.K, f"1 ... {T} (model.num_steps)")
    if len(config.optim.betas) != 2 or not all(0 <= b < 1 for b in config.optim.betas):
        raise ConfigError("optim.betas", config.optim.betas, "two numbers in [0, 1)")
    _validate_reward("reward", config.reward)
    if config.render.reward is not None:
        _validate_reward("render.reward", config.render.reward)
    _validate_prompts(config)
    if p.ho_stage is not None:
        if e.name != "rlr":
            raise ConfigError("prompts.ho_stage", p.ho_stage, "null unless estimator.name is rlr")
        if e.j != "uniform":
            raise ConfigError("estimator.j", e.j, "uniform when prompts.ho_stage picks the range")
        from rlr_video.train.prompts import stage_j_range  # pure arithmetic, no torch

        if stage_j_range(T, e.h, p.ho_stage, e.fo_steps) is None:
            allowed = f"a third of the {T} steps that fits h={e.h} above the fo_steps"
            raise ConfigError("prompts.ho_stage", p.ho_stage, allowed)
    _validate_memory(config)
    for name in t.log_with:
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                "train.log_with", t.log_with, f"trackers whose package is installed (pip install {module})"
            )


def _validate_memory(config: Config) -> None:
    from rlr_video.memory.budget import FORMAT, parse_size  # no torch

    mem = config.memory
    if mem.budget is not None:
        try:
            parse_size(mem.budget)
        except ValueError:
            raise ConfigError("memory.budget", mem.budget, FORMAT) from None
        if config.estimator.name != "rlr":
            raise ConfigError("memory.budget", mem.budget, "null unless estimator.name is rlr (the planner picks h)")
    if mem.checkpoint == "call" and config.estimator.name != "rlr":
        raise ConfigError("memory.checkpoint", mem.checkpoint, "auto, none or block unless estimator.name is rlr")


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


def _validate_prompts(config: Config) -> None:
    from rlr_video.train.prompts import PROMPT_FILE_TYPES_TEXT, PromptError, load_prompts

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
