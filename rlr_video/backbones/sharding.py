"""FSDP for a backbone's denoiser: the frozen base sharded over the processes, the trainable
weights (LoRA) replicated.

Each block of ``SHARD_BLOCKS`` (the transformer / UNet blocks of a family) becomes one FSDP2
unit (``torch.distributed.fsdp.fully_shard``) and the denoiser itself the root unit, which
holds what is left (embeddings, norms, the output projection) and which FSDP keeps gathered.
Between calls every process keeps 1/N of each block's frozen weights; a block is all-gathered
just before it runs and freed just after, in the forward and again in the backward pass.
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

Why ``fully_shard`` and not accelerate's FSDP plugin: accelerate 1.16 enables the plugin only
for GPU-like distributed types. With CPU processes (gloo) ``Accelerator(fsdp_plugin=...)``
stays ``MULTI_CPU`` and ``prepare`` wraps the model in ``DistributedDataParallel``, so the
sharded code path could not be tested without a GPU; and ``prepare`` would shard the LoRA as
well (see above). Calling torch's API directly is one code path for CPU and GPU.
"""

from __future__ import annotations

import warnings

from torch import nn

# The modules that become FSDP units, per backbone family (``backbone.family``; the toy by its
# class name). Each must be called through ``module(...)`` (FSDP gathers in its forward hook).
SHARD_BLOCKS: dict[str, tuple[str, ...]] = {
    "modelscope": ("CrossAttnDownBlock3D", "DownBlock3D", "UNetMidBlock3DCrossAttn", "CrossAttnUpBlock3D", "UpBlock3D"),
    "animatediff": (
        "CrossAttnDownBlockMotion",
        "DownBlockMotion",
        "UNetMidBlockCrossAttnMotion",
        "CrossAttnUpBlockMotion",
        "UpBlockMotion",
    ),
    "cogvideox": ("CogVideoXBlock",),
    "wan": ("WanTransformerBlock",),
    # The toy's frozen text embedding: ``encode`` calls it outside the denoiser's forward.
    "ToyBackbone": ("EmbeddingBag",),
}


def backbone_family(backbone) -> str:
    return getattr(backbone, "family", None) or type(backbone).__name__


def shard_units(backbone) -> list[nn.Module]:
    """The modules of ``backbone.denoiser`` that become FSDP units (``SHARD_BLOCKS``); they
    share no parameters (the planner counts each block's once)."""
    family = backbone_family(backbone)
    if family not in SHARD_BLOCKS:
        raise ValueError(
            f"train.sharding=fsdp: no FSDP block list for backbone family {family!r}; "
            f"known: {', '.join(SHARD_BLOCKS)} (add yours to rlr_video.backbones.sharding.SHARD_BLOCKS)"
        )
    names = SHARD_BLOCKS[family]
    units = [m for m in backbone.denoiser.modules() if type(m).__name__ in names]
    if not units:
        raise ValueError(f"train.sharding=fsdp: {type(backbone.denoiser).__name__} has none of the blocks {names}")
    return units


def shard_denoiser(backbone) -> nn.Module:
    """Shard ``backbone.denoiser`` in place over the default process group; returns it.

    Call it after the trainable weights are final on every process (LoRA injected, weights
    broadcast) and before anything reads the frozen weights outside a forward call."""
    from torch.distributed.fsdp import fully_shard

    # FSDP2 warns that a unit returning a view would lose its pre-backward hook to an in-place
    # op on that view. The diffusers blocks return views that nothing modifies in place:
    # tests/test_train_fsdp.py checks the gradients equal the unsharded model's.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(\w+\) returned a view tensor")
    denoiser = backbone.denoiser
    ignored = set(backbone.trainable_parameters())
    units = shard_units(backbone)
    for unit in units:
        fully_shard(unit, reshard_after_forward=True, ignored_params=ignored)
    in_units = {id(p) for u in units for p in u.parameters()}
    # The root unit takes the frozen weights outside the blocks. Without any (the toy) it is
    # left out: FSDP wants a root's forward to run first, and the toy's encode calls its text
    # unit outside the denoiser's forward.
    if any(id(p) not in in_units and p not in ignored for p in denoiser.parameters()):
        fully_shard(denoiser, ignored_params=ignored)
    return denoiser
