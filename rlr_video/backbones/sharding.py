"""FSDP for a backbone's denoiser: the frozen base sharded over the processes, the trainable
weights (LoRA) replicated.

Each block of the family's ``shard_blocks`` (its transformer / UNet blocks; or of the classes
accelerate's FSDP plugin names) becomes one FSDP2 unit (``torch.distributed.fsdp.fully_shard``)
and the denoiser itself the root unit, which holds what is left (embeddings, norms, the output
projection) and which FSDP keeps gathered. Between calls every process keeps 1/N of each
block's frozen weights; a block is all-gathered just before it runs and freed just after, in
the forward and again in the backward pass.
Text encoder, VAE and reward models stay whole on every process.

Why the trainable weights are not sharded: the estimators take gradients with
``torch.autograd.grad(loss, params)``, and FSDP2 runs a unit's forward on all-gathered copies
of its parameters, so the sharded parameters are not in the autograd graph:
``autograd.grad(..., allow_unused=True)`` returns None for every one of them, a silent zero
gradient (measured with torch 2.14.1 on 2 gloo processes). They are therefore
``ignored_params``: plain tensors in every process, summed across processes by the trainer's
all-reduce as without sharding, so checkpoints and the exported LoRA are the very files of a
DDP run. LoRA is a small fraction of a video model (rank 16 on Wan 2.1 14B's attention
projections: about 0.4%), the frozen base is what needs sharding.

Mixed precision (``train.mixed_precision: bf16``): the units gather the frozen weights in
bfloat16 (``MixedPrecisionPolicy(param_dtype=...)``), which halves the all-gather traffic and
the gathered blocks' memory when they are stored wider. The weights autocast casts anyway
(linear, convolution) are bitwise what it would cast them to; those it leaves in
float32 (norms' scales, biases added outside a matmul) are rounded to bfloat16. The units'
inputs are not cast (``cast_forward_inputs=False``): autocast picks each op's dtype, as without
sharding. The LoRA, ignored by FSDP, stays float32 and is cast by autocast as before.

Accelerate's FSDP plugin (``accelerate launch --use_fsdp --fsdp_version 2``, or an FSDP
``accelerate config``) means ``train.sharding=fsdp``, and its settings are mapped onto the
same ``fully_shard`` calls (``shard_settings``): never ``accelerator.prepare(model)``, which
would shard the LoRA too. The plugin is built from the ``FSDP_*`` variables the launcher sets,
as ``Accelerator`` itself does: on CPU processes accelerate stays ``MULTI_CPU`` and drops the
plugin, so reading it ourselves is one code path for CPU (gloo) and GPU.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rlr_video.backbones.family import denoisers_of, family_of
from rlr_video.errors import ConfigError


@dataclass(frozen=True)
class ShardSettings:
    """How ``shard_denoiser`` shards; ``shard_settings`` reads them from the run config and
    accelerate's FSDP plugin."""

    blocks: tuple[str, ...] | None = None  # class names of the units; None: the family's shard_blocks
    reshard_after_forward: bool = True  # False: a block stays gathered from its forward to its backward
    cpu_offload: bool = False  # the shards live in host memory, copied to the device for each gather
    param_dtype: torch.dtype | None = None  # the dtype the units gather in; None: as stored


def accelerate_fsdp_plugin():
    """Accelerate's FSDP plugin of this launch (``accelerate launch --use_fsdp``, or an FSDP
    ``accelerate config``), built from the ``FSDP_*`` variables as ``Accelerator`` builds it;
    None without one. Settings the trainer cannot honour are a ``ConfigError``."""
    from accelerate.utils import FullyShardedDataParallelPlugin, parse_flag_from_env

    if not parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return None
    # Checked before the plugin is built: on CPU processes FSDP1's launch defaults
    # (sync_module_states) make accelerate raise an error that does not say why.
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ConfigError(
            "fsdp_version",
            version,
            "2 (accelerate launch --fsdp_version 2): the trainer shards with FSDP2's fully_shard",
        )
    plugin = FullyShardedDataParallelPlugin()
    if plugin.activation_checkpointing:
        raise ConfigError(
            "fsdp_activation_checkpointing",
            True,
            "false: the trainer checkpoints the denoiser itself (memory.checkpoint: block or call, or memory.budget)",
        )
    return plugin


def shard_settings(plugin, mixed_precision: str, note: Callable[[str], None] | None = None) -> ShardSettings:
    """The settings for ``train.mixed_precision`` and accelerate's FSDP plugin (None: the
    defaults). The plugin's wrap class list, ``reshard_after_forward`` and ``cpu_offload``
    are honoured; the settings that cannot apply are passed to ``note``, one line each.
    Mixed precision is ``train.mixed_precision``'s, as for ``Accelerator`` (which the trainer
    gives it explicitly, overriding ``accelerate launch --mixed_precision``)."""
    param_dtype = torch.bfloat16 if mixed_precision == "bf16" else None
    if plugin is None:
        return ShardSettings(param_dtype=param_dtype)
    from torch.distributed.fsdp import CPUOffloadPolicy, StateDictType
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy, transformer_auto_wrap_policy

    notes = []
    blocks = None
    if plugin.auto_wrap_policy is transformer_auto_wrap_policy and plugin.transformer_cls_names_to_wrap:
        blocks = tuple(plugin.transformer_cls_names_to_wrap)
    elif plugin.auto_wrap_policy is size_based_auto_wrap_policy:
        notes.append("fsdp_auto_wrap_policy=SIZE_BASED_WRAP: not used; the units are the family's shard_blocks")
    if plugin.ignored_modules:
        notes.append(f"fsdp_ignored_modules={plugin.ignored_modules}: not used; only the LoRA stays whole")
    if plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT:
        notes.append("fsdp_state_dict_type=SHARDED_STATE_DICT: not used; checkpoints hold only the LoRA, whole")
    if plugin.cpu_ram_efficient_loading:
        notes.append("fsdp_cpu_ram_efficient_loading=true: not used; every process loads the whole model, then shards")
    if note:
        for line in notes:
            note(f"accelerate FSDP plugin: {line}")
    offload = isinstance(plugin.cpu_offload, CPUOffloadPolicy)
    return ShardSettings(blocks, plugin.reshard_after_forward, offload, param_dtype)


def shard_units(backbone, blocks: Sequence[str] | None = None) -> list[nn.Module]:
    """The modules of the backbone's denoisers (``backbone.denoiser``, or each expert of a
    mixture of experts) that become FSDP units: those of the classes ``blocks`` (accelerate's
    ``fsdp_transformer_layer_cls_to_wrap``; each must occur), by default the family's
    ``shard_blocks`` (``register_family``), which share no parameters (the planner counts each
    block's once)."""
    denoisers = denoisers_of(backbone)
    what = " and ".join(sorted({type(d).__name__ for d in denoisers}))
    if blocks is not None:
        units = [m for d in denoisers for m in d.modules() if type(m).__name__ in blocks]
        missing = sorted(set(blocks) - {type(u).__name__ for u in units})
        if missing:
            raise ConfigError(
                "fsdp_transformer_layer_cls_to_wrap",
                ",".join(blocks),
                f"module classes of {what}; it has no {', '.join(missing)}",
            )
        return units
    names = family_of(backbone, "train.sharding=fsdp").require("shard_blocks", "train.sharding=fsdp")
    units = [m for d in denoisers for m in d.modules() if type(m).__name__ in names]
    if not units:
        raise ValueError(f"train.sharding=fsdp: {what} has none of the blocks {names}")
    return units


def shard_denoiser(backbone, settings: ShardSettings = ShardSettings()) -> nn.Module:
    """Shard ``backbone.denoiser`` (and every other expert of a mixture of experts, each its own
    root unit) in place over the default process group; returns ``backbone.denoiser``.

    Call it after the trainable weights are final on every process (LoRA injected, weights
    broadcast) and before anything reads the frozen weights outside a forward call."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    # FSDP2 warns that a unit returning a view would lose its pre-backward hook to an in-place
    # op on that view. The diffusers blocks return views that nothing modifies in place:
    # tests/test_train_fsdp.py checks the gradients equal the unsharded model's.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(\w+\) returned a view tensor")
    denoisers = denoisers_of(backbone)
    ignored = set(backbone.trainable_parameters())
    on_cpu = next(denoisers[0].parameters()).device.type == "cpu"
    options = {
        "reshard_after_forward": settings.reshard_after_forward,
        # pinned host memory needs a GPU; CPU processes offload to unpinned memory (a no-op)
        "offload_policy": CPUOffloadPolicy(pin_memory=not on_cpu) if settings.cpu_offload else OffloadPolicy(),
        # the units' inputs keep their dtype: autocast picks each op's, as without sharding
        "mp_policy": MixedPrecisionPolicy(param_dtype=settings.param_dtype, cast_forward_inputs=False),
        "ignored_params": ignored,
    }
    units = shard_units(backbone, settings.blocks)
    for unit in reversed(units):  # innermost first: a plugin's class list may nest units
        fully_shard(unit, **options)
    in_units = {id(p) for u in units for p in u.parameters()}
    # Each denoiser's root unit takes its frozen weights outside the blocks. Without any (the toy)
    # it is left out: FSDP wants a root's forward to run first, and the toy's encode calls its
    # text unit outside the denoiser's forward.
    for denoiser in denoisers:
        if any(id(p) not in in_units and p not in ignored for p in denoiser.parameters()):
            fully_shard(denoiser, **options)
    return denoisers[0]
