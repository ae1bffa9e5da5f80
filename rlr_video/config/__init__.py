"""The typed config of a training / rendering run: YAML presets with ``key=value`` overrides.

A run is described by one YAML file (a preset shipped in ``rlr_video/configs/`` or the user's
own) plus overrides from the command line (``estimator.h=3``, ``reward={clip: 1}``):

- ``schema.py``: the sections and every key, documented (the estimator's keys in its own file);
- ``loading.py``: reading presets and files, overrides, relative paths;
- ``coerce.py``: plain values to the schema's types, each error naming its key;
- ``validate.py``: the cross-field rules that need no model.
"""

from rlr_video.config.loading import (
    DEFAULT_PRESET,
    PRESET_DIR,
    from_dict,
    load_config,
    resolve_config_path,
    yaml_error,
)
from rlr_video.config.schema import (
    Config,
    MemoryConfig,
    ModelConfig,
    OptimConfig,
    PromptsConfig,
    RenderConfig,
    ToyConfig,
    TrainConfig,
)
from rlr_video.config.validate import run_context, validate
from rlr_video.errors import ConfigError, ConfigFileError
from rlr_video.estimators.registry import EstimatorConfig

__all__ = [
    "DEFAULT_PRESET",
    "PRESET_DIR",
    "Config",
    "ConfigError",
    "ConfigFileError",
    "EstimatorConfig",
    "MemoryConfig",
    "ModelConfig",
    "OptimConfig",
    "PromptsConfig",
    "RenderConfig",
    "ToyConfig",
    "TrainConfig",
    "from_dict",
    "load_config",
    "resolve_config_path",
    "run_context",
    "validate",
    "yaml_error",
]
