"""Predicted activation memory of one denoiser call, the decoder and the reward.

``CostModel`` ties the parts together for one backbone and reward:

- ``trace``: a call traced on the meta device, its saved bytes by component and checkpoint unit;
- ``attention``: what attention keeps, by the kernel the training device picks;
- ``costs``: the memory of a call, decoder or reward under each checkpointing mode, and the
  fixed bytes of weights, trainable parameters, gradients and AdamW state;
- ``reward_cost``: a reward's activations, from its model or from its name alone;
- ``meta``: the backbone's models on the meta device, which the traces run.

The names of those modules stay importable from here.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from rlr_video.backbones.causal_vae import decode_profile
from rlr_video.backbones.family import MissingFamilyHook, family_of, unwrap
from rlr_video.memory.attention import (
    AttentionBackend,
    attention_saved_bytes,
    attention_scores_bytes,
    processors_backend,
    sdpa_backend,
)
from rlr_video.memory.costs import (
    GRAD_IO,
    RECOMPUTE,
    SCORE_GRADS,
    TRANSIENT,
    Calibration,
    CallCost,
    FixedCost,
    SegmentCost,
)
from rlr_video.memory.meta import META, is_meta, meta_conditioning, meta_shell
from rlr_video.memory.recompute import MemoryOptions, decoder_is_frame_local, decoder_steps_checkpointed
from rlr_video.memory.reward_cost import (
    REWARD_TOWERS,
    RewardStub,
    leaf_rewards,
    reward_leaf_cost,
    reward_modules,
    reward_stubs,
    vit_config,
    vit_image_bytes,
)
from rlr_video.memory.shape import VideoShape
from rlr_video.memory.trace import COMPONENTS, Trace, UnitCost, trace
from rlr_video.memory.units import builtin_checkpoint_units, classify_units

__all__ = [
    "COMPONENTS",
    "GRAD_IO",
    "RECOMPUTE",
    "REWARD_TOWERS",
    "SCORE_GRADS",
    "TRANSIENT",
    "AttentionBackend",
    "Calibration",
    "CallCost",
    "CostModel",
    "FixedCost",
    "RewardStub",
    "SegmentCost",
    "Trace",
    "UnitCost",
    "VideoShape",
    "attention_saved_bytes",
    "attention_scores_bytes",
    "gib",
    "processors_backend",
    "reward_stubs",
    "sdpa_backend",
    "trace",
    "vit_config",
    "vit_image_bytes",
]


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.1f} MiB"


class CostModel:
    """Predicted memory of one backbone (real or built on the meta device) and reward.

    Args:
        backbone: a ``VideoBackbone``: the diffusers adapters, the toy, or one of the user's
            own (traced if its models can be copied to the meta device).
        reward: the reward callable (optional; traced on meta frames when possible).
        device: where training runs (decides the attention kernel); default the backbone's.
        attention: override the detected attention kernel (``math``, ``flash``, ``xformers`` ...).
        text_length: prompt tokens (default: the backbone's prompt encoder's length).
        processes: training processes (``fixed`` is per process).
        sharding: ``fsdp``: the denoiser's frozen weights sharded over the processes
            (``rlr_video.backbones.sharding``); ``none``: every process holds all weights.
    """

    def __init__(
        self,
        backbone,
        reward=None,
        device: torch.device | str | None = None,
        attention: str | None = None,
        text_length: int | None = None,
        calibration: Calibration | None = None,
        processes: int = 1,
        sharding: str = "none",
    ):
        if processes < 1 or sharding not in ("none", "fsdp"):
            raise ValueError(f"processes={processes} must be >= 1 and sharding={sharding!r} one of none, fsdp")
        self.processes, self.sharding = processes, sharding
        self.backbone = unwrap(backbone)
        self.reward = reward
        model = getattr(self.backbone, "denoiser", None)
        real_device = next(model.parameters()).device if isinstance(model, nn.Module) else torch.device("cpu")
        self.device = torch.device(device) if device is not None else real_device
        if self.device.type == "meta":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        override = attention or (processors_backend(model) if isinstance(model, nn.Module) else None)
        self.attention = AttentionBackend(self.device, override)
        self.calibration = calibration or Calibration()
        self.family = family_of(self.backbone)
        self.transformer = self.family.denoiser_kind == "transformer"
        # A tiny model whose code computes on its inputs' device is traced for real on the CPU.
        self.trace_device = torch.device("cpu") if self.family.trace_on_cpu else META
        self.shell = self.backbone if self.family.trace_on_cpu else meta_shell(self.backbone)
        self.text_length = text_length or _text_length(self.backbone)
        self._cache: dict[tuple, Any] = {}

    # ---------------------------------------------------------------- shapes

    @property
    def video_shape(self) -> tuple[int, int, int]:
        b = self.backbone
        return b.num_frames, b.height, b.width

    def default_shape(self, batch: int) -> VideoShape:
        f, h, w = self.video_shape
        return VideoShape(batch, f, h, w)

    def latent_shape(self, shape: VideoShape) -> tuple[int, ...]:
        """One video's latents for ``shape`` (the denoiser's layout): the backbone's hook."""
        hook = getattr(self.backbone, "latent_shape_for", None)
        if hook is None:
            raise MissingFamilyHook(self.family.name, "latent_shape_for (a method of its backbone)", "the cost model")
        return tuple(hook(shape.frames, shape.height, shape.width))

    def latent_bytes(self, shape: VideoShape) -> int:
        return shape.batch * math.prod(self.latent_shape(shape)) * 4  # the chain runs in float32

    def frames_bytes(self, shape: VideoShape) -> int:
        return shape.batch * shape.frames * 3 * shape.height * shape.width * 4

    @property
    def guided(self) -> bool:
        return float(getattr(self.backbone, "guidance_scale", 1.0)) > 1.0

    # ---------------------------------------------------------------- denoiser

    def call(self, shape: VideoShape, input_grad: bool = True) -> CallCost:
        """One denoiser call (classifier-free guidance included) with gradients."""
        key = ("call", shape, input_grad)
        if key not in self._cache:
            self._cache[key] = self._trace_call(shape, input_grad)
        return CallCost(
            self._cache[key], self.calibration.denoiser, TRANSIENT * self.calibration.transient, self._tokens(shape)
        )

    def _tokens(self, shape: VideoShape) -> int | None:
        hook = getattr(self.backbone, "tokens_per_latent_frame", None)
        if hook is None:
            return None
        lat = self.latent_shape(shape)
        return hook(lat[-2], lat[-1])

    def _trace_call(self, shape: VideoShape, input_grad: bool) -> Trace:
        shell = self.shell
        latents = torch.zeros((shape.batch, *self.latent_shape(shape)), device=self.trace_device)
        latents.requires_grad_(input_grad)
        cond = meta_conditioning(self.backbone, shape.batch, self.text_length, self.trace_device)
        step = max(1, min(self.backbone.num_steps, self.backbone.num_steps // 2))
        model = getattr(shell, "denoiser", None)
        units = classify_units(model, self.family.denoiser_kind) if model is not None else []
        predict = lambda: shell.predict(latents, step, cond)  # noqa: E731
        call = trace(predict, model, self.attention, self.transformer, None, True, units)
        blocks = builtin_checkpoint_units(self.backbone, model) if model is not None else []
        if blocks:  # the same call, with the model's own checkpointed blocks as the units
            call.builtin = trace(predict, model, self.attention, True, units=blocks)
        return call

    # ---------------------------------------------------------------- decoder

    def decoder(self, shape: VideoShape) -> SegmentCost:
        key = ("decode", shape)
        if key not in self._cache:
            self._cache[key] = self._trace_decoder(shape)
        cost = copy.copy(self._cache[key])
        cost.scale, cost.transient = self.calibration.decoder, TRANSIENT * self.calibration.transient
        return cost

    def _trace_decoder(self, shape: VideoShape) -> SegmentCost:
        frame_local = decoder_is_frame_local(self.backbone)
        frames_out = self.frames_bytes(shape)
        traced = shape.replace(batch=1, frames=1) if frame_local else shape
        latents = torch.zeros((traced.batch, *self.latent_shape(traced)), device=self.trace_device, requires_grad=True)
        tr = trace(
            lambda: self.shell.decode(latents), getattr(self.shell, "vae", None), self.attention, False, "decoder"
        )
        if frame_local:
            factor = shape.batch * shape.frames
            return SegmentCost(tr.saved * factor, frames_out, shape.frames, tr.largest_any * shape.batch, True)
        cost = SegmentCost(tr.saved, frames_out, 1, tr.largest_any, False)
        if decoder_steps_checkpointed(self.shell):
            profile = decode_profile(self.shell.vae, self.shell.vae_input(latents.detach()), self.shell.decode_steps)
            cost.carried = shape.batch * (profile.steps - 1) * profile.carried
            cost.step_share = profile.largest_step / (shape.batch * profile.frames)
        return cost

    def decode_forward(self, shape: VideoShape) -> int:
        """Peak of decoding x_0 without gradients (costed estimators, which only sample): the
        decoder's traced forward peak, its output included; a frame-local decoder's traced on
        one frame and counted for every frame of the batch (decoded together)."""
        key = ("decode_forward", shape)
        if key not in self._cache:
            frame_local = decoder_is_frame_local(self.backbone)
            traced = shape.replace(batch=1, frames=1) if frame_local else shape
            latents = torch.zeros((traced.batch, *self.latent_shape(traced)), device=self.trace_device)
            vae = getattr(self.shell, "vae", None)
            tr = trace(lambda: self.shell.decode(latents), vae, self.attention, False, "decoder", forward_peak=True)
            self._cache[key] = tr.forward_peak * (shape.batch * shape.frames if frame_local else 1)
        return int(self._cache[key] * self.calibration.decoder)

    # ---------------------------------------------------------------- reward

    def reward_cost(self, shape: VideoShape) -> SegmentCost:
        key = ("reward", shape)
        if key not in self._cache:
            self._cache[key] = self._reward_cost(shape)
        cost = copy.copy(self._cache[key])
        cost.scale, cost.transient = self.calibration.reward, TRANSIENT * self.calibration.transient
        return cost

    def _reward_cost(self, shape: VideoShape) -> SegmentCost:
        images = shape.batch * shape.frames
        frames = self.frames_bytes(shape)
        total, largest, chunkable = 0, 0, False
        for r in leaf_rewards(self.reward):
            saved, _, big, can_chunk = reward_leaf_cost(r, shape, self.attention)
            total += saved
            largest = max(largest, big)
            chunkable = chunkable or can_chunk
        if self.reward is None:
            total, largest = frames, frames
        return SegmentCost(total, 0, images, largest, chunkable)

    def tail(self, shape: VideoShape, options: MemoryOptions) -> int:
        """Peak of decoding x_0 and scoring it, with the backward down to the latents: first the
        reward's backward (decoder output and reward activations alive), then the decoder's."""
        dec, rew = self.decoder(shape), self.reward_cost(shape)
        dec_ck = options.checkpoint != "none" or options.decoder_chunk is not None
        dchunk, rchunk = options.decoder_chunk, options.reward_images
        rew_ck = rchunk is not None and rew.frame_local
        d_held, r_held = dec.held(dchunk, dec_ck), rew.held(rchunk, rew_ck)
        frames = self.frames_bytes(shape)
        return max(
            d_held + frames + r_held + rew.backward_extra(rchunk, rew_ck),
            d_held + frames + dec.backward_extra(dchunk, dec_ck),
        )

    # ---------------------------------------------------------------- fixed

    def fixed(self, trainable_numel: int | None = None) -> FixedCost:
        """Weights of every model, the trainable parameters, gradients and AdamW state, per
        process. The trainable parameters and their state are whole on every process, with or
        without sharding (see ``rlr_video.backbones.sharding``)."""
        b = self.backbone
        models = [m for m in (getattr(b, "denoiser", None), getattr(b, "vae", None)) if isinstance(m, nn.Module)]
        text = getattr(getattr(b, "prompt_encoder", None), "text_encoder", None)
        if isinstance(text, nn.Module):
            models.append(text)
        details = {}
        for name, m in zip(("denoiser", "vae", "text_encoder"), models):
            details[name] = sum(p.numel() * p.element_size() for p in m.parameters())
        for r in leaf_rewards(self.reward):
            params = {id(p): p for m in reward_modules(r) for p in m.parameters()}.values()
            if params:
                details[f"reward:{getattr(r, 'name', type(r).__name__)}"] = sum(
                    p.numel() * p.element_size() for p in params
                )
        if trainable_numel is None:
            trainable_numel = _trainable_numel(b)
        trainable = trainable_numel * 4
        if not is_meta(b) and "denoiser" in details:  # LoRA weights are inside the denoiser's parameters
            details["denoiser"] -= trainable
        load = 0
        if self.sharding == "fsdp" and self.processes > 1 and "denoiser" in details:
            load = sum(details.values())
            details.update(self._sharded_denoiser())
        return FixedCost(sum(details.values()), trainable, 4 * trainable, 2 * trainable, details, load)

    def _sharded_denoiser(self) -> dict[str, int]:
        """The denoiser's frozen weights per process under FSDP: each block's split over the
        processes, the root unit's own (embeddings, norms, projections) whole, as FSDP keeps
        the root gathered between calls, and two blocks gathered at once (the one computing
        and the next one being fetched)."""
        from rlr_video.backbones.sharding import shard_units

        trainable = {id(p) for p in self.backbone.trainable_parameters()}

        def frozen(module: nn.Module) -> int:
            return sum(p.numel() * p.element_size() for p in module.parameters() if id(p) not in trainable)

        blocks = [frozen(u) for u in shard_units(self.backbone)]
        root = frozen(self.backbone.denoiser) - sum(blocks)
        return {
            "denoiser": root + math.ceil(sum(blocks) / self.processes),
            "denoiser_gathered": min(2, len(blocks)) * max(blocks),
        }


def _text_length(backbone) -> int:
    encoder = getattr(backbone, "prompt_encoder", None)
    return int(getattr(encoder, "max_length", 0) or 77)


def _trainable_numel(backbone) -> int:
    params = backbone.trainable_parameters()
    if params:
        return sum(p.numel() for p in params)
    options = getattr(backbone, "options", None)
    rank = getattr(options, "lora_rank", None) or 0
    if not rank or not isinstance(getattr(backbone, "denoiser", None), nn.Module):
        return 0
    targets = tuple(options.lora_targets)
    return sum(
        rank * (m.in_features + m.out_features)
        for n, m in backbone.denoiser.named_modules()
        if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets)
    )
