"""What the four diffusers adapters share: the ``VideoBackbone`` methods around a denoiser.

A family adapter (``animatediff.py``, ``modelscope.py``, ``cogvideox.py``, ``wan.py``)
loads its components and implements two things: ``_denoise`` (one batched denoiser call in
the model's own calling convention) and ``decode``. Everything else (classifier-free
guidance, prompt encoding, initial noise, LoRA, checkpointing, devices) lives here once.

The chain runs in float32 whatever the weights' dtype: latents, noises and transition
means stay float32 and only the denoiser's input is cast (as ``WanPipeline`` does), so
the likelihood ratios the estimators compute do not lose digits in half precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from rlr_video.backbones import lora as lora_lib
from rlr_video.backbones.family import family_of
from rlr_video.backbones.options import BackboneOptions
from rlr_video.backbones.text import PromptEncoder, TextConditioning, encode_with_guidance
from rlr_video.chain import Transition, draw_noise


class DiffusersBackbone:
    """A diffusers text-to-video model as a ``VideoBackbone`` (see ``protocol.py``).

    Args:
        denoiser: the UNet or transformer (LoRA goes here).
        prompt_encoder: tokenizer + text encoder (frozen).
        vae: the decoder's model (frozen); None for a pixel-space model.
        transition: the Gaussian chain built from the model's scheduler.
        options: the load options (guidance, LoRA, checkpointing, dtype, device ...).
        latent_shape: one video's initial latents, in the denoiser's layout.
        guidance_scale: classifier-free guidance; <= 1 disables the unconditional branch.
        video_shape: (frames, height, width) of the decoded video.
        source: where the weights came from (for messages and ``repr``).
    """

    family: ClassVar[str] = ""  # set by register_family
    # The pipeline component that holds the denoiser: the key prefix of saved LoRA files.
    denoiser_component: ClassVar[str] = "unet"
    # The diffusers pipeline whose ``save_lora_weights`` writes this family's LoRA files.
    pipeline_class_name: ClassVar[str] = ""

    def __init__(
        self,
        denoiser: nn.Module,
        prompt_encoder: PromptEncoder,
        vae: nn.Module | None,
        transition: Transition,
        options: BackboneOptions,
        latent_shape: Sequence[int],
        guidance_scale: float,
        video_shape: tuple[int, int, int],
        source: str | Path | None = None,
    ):
        self.denoiser = denoiser
        self.prompt_encoder = prompt_encoder
        self.vae = vae
        self.transition = transition
        self.num_steps = transition.num_steps
        self.options = options
        self.dtype = options.dtype
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = options.negative_prompt
        self.num_frames, self.height, self.width = video_shape
        self.source = str(source) if source is not None else None

        if len(self.denoisers) < 2 and (options.guidance_scale_2 is not None or options.lora_experts is not None):
            raise ValueError(
                "guidance_scale_2 and lora_experts apply to a mixture of experts (Wan 2.2 A14B); "
                f"the model at {source} has one denoiser"
            )
        for module in self._models():
            module.requires_grad_(False)
        if options.vae_tiling and vae is not None:
            vae.enable_tiling()
        if options.lora_path:  # the file's own rank, alpha and targets (lora_rank is for a new LoRA)
            self.load_lora(options.lora_path)
        elif options.lora_rank:
            config = lora_lib.lora_config(options.lora_rank, options.lora_alpha, options.lora_targets)
            for model in self.lora_denoisers():
                lora_lib.add_lora(model, config)
        if options.gradient_checkpointing:
            self.enable_gradient_checkpointing()
        self._set_modes()
        self.to(options.device)

    def _set_modes(self) -> None:
        """Eval mode everywhere; the denoiser in train mode only with ``train_mode=True``.

        Dropout off by default: a replay must compute the very function the rollout sampled
        from, or the stored noises no longer reproduce the chain (UNet3D's temporal
        convolutions have dropout 0.1). Called again whenever LoRA layers are added, since
        new modules start in train mode.
        """
        for module in self._models():
            module.eval()
        for model in self.denoisers:
            model.train(self.options.train_mode)

    # ------------------------------------------------------------------ VideoBackbone
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA weights of the denoisers (empty without LoRA); nothing else trains."""
        return [p for model in self.denoisers for p in lora_lib.lora_parameters(model)]

    @contextlib.contextmanager
    def base_model(self) -> Iterator[None]:
        """Inside: ``predict`` runs the denoisers (every expert) with their LoRA disabled (weights
        untouched), the reference policy of a KL penalty (``lora.lora_disabled``)."""
        with contextlib.ExitStack() as stack:
            for model in self.denoisers:
                stack.enter_context(lora_lib.lora_disabled(model))
            yield

    def encode(self, prompts: Sequence[str]) -> TextConditioning:
        """Negative prompts and prompts through the text encoder in one batched call."""
        guided = self.guidance_scale > 1.0
        cond = encode_with_guidance(self.prompt_encoder, prompts, self.negative_prompt, guided, self.dtype)
        return cond.to(self.device)

    def initial_latents(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """x_T ~ N(0, I) in float32, drawn on the generator's device (device-independent seeds)."""
        like = torch.empty((batch_size, *self.latent_shape), device=self.device, dtype=torch.float32)
        return draw_noise(like, generator)

    def predict(self, latents: Tensor, step: int, cond: TextConditioning) -> Tensor:
        """The denoiser's output at chain step ``step``, classifier-free guidance applied.

        Everything about a step (which denoiser, which guidance scale) follows from ``step``
        alone, so a replay or a log-prob of a step computes the function its rollout sampled."""
        if cond.batch_size != latents.shape[0]:
            raise ValueError(f"conditioning for {cond.batch_size} prompts, latents for {latents.shape[0]} videos")
        t = self.transition.timestep(step).to(latents.device)
        x = latents.to(self.dtype)
        mask = {} if cond.mask is None else {"mask": cond.mask}  # for a denoiser that takes the token mask
        if not cond.guided:
            return self._denoise_at(step, x, t, cond.embeds, **mask).to(latents.dtype)
        uncond, text = self._denoise_at(step, torch.cat([x, x]), t, cond.embeds, **mask).float().chunk(2)
        return (uncond + self.guidance_at(step) * (text - uncond)).to(latents.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """Frames (B, F, 3, H, W) in [0, 1]; differentiable."""
        raise NotImplementedError

    # ------------------------------------------------------------------ family hooks
    def _denoise(self, x: Tensor, t: Tensor, embeds: Tensor) -> Tensor:
        """One denoiser call on a batch (already doubled for CFG), in the latents' layout (a family
        whose encoder gives a token mask takes it as ``mask=``, rows as ``embeds``)."""
        raise NotImplementedError

    @property
    def denoisers(self) -> list[nn.Module]:
        """Every denoiser the chain calls, ``denoiser`` first: one for most families; a mixture
        of experts (Wan 2.2 A14B) lists each. LoRA, checkpointing, FSDP and the memory planner
        act on all of them."""
        return [self.denoiser]

    def denoiser_at(self, step: int) -> nn.Module:
        """The denoiser ``predict`` calls at chain step ``step``."""
        return self.denoiser

    def _denoise_at(self, step: int, x: Tensor, t: Tensor, embeds: Tensor, **mask: Tensor) -> Tensor:
        """``_denoise`` at chain step ``step`` (a mixture of experts picks its expert by it)."""
        return self._denoise(x, t, embeds, **mask)

    def guidance_at(self, step: int) -> float:
        """The classifier-free guidance scale at chain step ``step``."""
        return self.guidance_scale

    def lora_denoisers(self) -> list[nn.Module]:
        """The denoisers a new LoRA goes on (``lora_rank``): all of them unless the family lets
        the options choose."""
        return self.denoisers

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the denoisers' blocks in backward passes (diffusers' own switch)."""
        for model in self.denoisers:
            model.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        for model in self.denoisers:
            model.disable_gradient_checkpointing()

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether the denoisers' own checkpointing (``enable_gradient_checkpointing``) is on."""
        return all(getattr(model, "is_gradient_checkpointing", False) for model in self.denoisers)

    # ------------------------------------------------------------------ cost-model hooks
    def latent_shape_for(self, frames: int, height: int, width: int) -> tuple[int, ...]:
        """One video's latents (the denoiser's layout) for a video of ``frames`` x ``height`` x
        ``width``: the compression of this model's VAE, in time and space. A causal VAE's ratio
        in time is read off the model's own shapes (1 + k x ratio frames make 1 + k latent frames)
        where they show it: a VAE may compress less than its family's (tiny-shapes-wan's 2x
        against Wan's 4x)."""
        layout = family_of(self).layout
        base = list(self.latent_shape)
        h0, w0 = self.height, self.width
        if height * base[-2] % h0 or width * base[-1] % w0:
            raise ValueError(f"{height}x{width} does not tile the latent grid of {h0}x{w0}")
        base[-2], base[-1] = height * base[-2] // h0, width * base[-1] // w0
        axis = layout.frame_axis - 1
        latent0 = base[axis]
        if layout.causal and latent0 > 1:
            base[axis] = (frames - 1) * (latent0 - 1) // (self.num_frames - 1) + 1
        else:
            base[axis] = layout.latent_frames(frames)
        return tuple(base)

    def tokens_per_latent_frame(self, latent_height: int, latent_width: int) -> int | None:
        """Tokens a transformer makes of one latent frame (its spatial patches); None for a UNet."""
        if family_of(self).denoiser_kind != "transformer":
            return None
        patch = self.denoiser.config.patch_size
        ph, pw = (patch[1], patch[2]) if isinstance(patch, list | tuple) else (patch, patch)
        return (latent_height // ph) * (latent_width // pw)

    # ------------------------------------------------------------------ housekeeping
    def _models(self) -> list[nn.Module]:
        return [m for m in (*self.denoisers, self.prompt_encoder.text_encoder, self.vae) if m is not None]

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def to(self, device: torch.device | str) -> DiffusersBackbone:
        """Move every model (denoiser with its LoRA, text encoder, VAE) to ``device``."""
        for module in self._models():
            module.to(device)
        return self

    def save_lora(self, directory: str | Path) -> Path:
        """Save the LoRA weights as ``directory/pytorch_lora_weights.safetensors``
        (diffusers/PEFT layout, loadable with the pipeline's ``load_lora_weights`` where the
        family's denoiser supports it, and with ``load_lora`` everywhere)."""
        return lora_lib.save_lora(self.denoiser, directory, self.denoiser_component, self._pipeline_class())

    def load_lora(self, path: str | Path) -> list[nn.Parameter]:
        """Load LoRA weights saved by ``save_lora`` (or by diffusers) into the denoiser."""
        params = lora_lib.load_lora(self.denoiser, path, self.denoiser_component)
        for p in params:
            p.data = p.data.to(self.device)
        self._set_modes()
        return params

    def _pipeline_class(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class_name) if self.pipeline_class_name else None

    def __repr__(self) -> str:
        n_lora = sum(p.numel() for p in self.trainable_parameters())
        return (
            f"{type(self).__name__}(source={self.source!r}, steps={self.num_steps}, "
            f"video={self.num_frames}x{self.height}x{self.width}, latents={self.latent_shape}, "
            f"guidance={self.guidance_scale}, dtype={self.dtype}, lora_params={n_lora})"
        )


def or_default(value, default):
    """``value`` unless it is None (an option left to the family's default)."""
    return default if value is None else value


def spatial_size(options: BackboneOptions, default: int | tuple[int, int], multiple: int, root) -> tuple[int, int]:
    """(height, width) from the options or the model's default, checked against ``multiple``
    (the VAE's spatial factor times the patch size: latents must tile the frame exactly)."""
    default_h, default_w = default if isinstance(default, tuple) else (default, default)
    height, width = options.height or default_h, options.width or default_w
    if height % multiple or width % multiple:
        raise ValueError(f"height={height}, width={width} must be multiples of {multiple} for the model at {root}")
    return height, width


def check_frames(num_frames: int, temporal: int, root) -> int:
    """Causal video VAEs encode 1 + k * ``temporal`` frames into 1 + k latent frames."""
    if num_frames < 1 or (num_frames - 1) % temporal:
        raise ValueError(
            f"num_frames={num_frames} must be 1 + a multiple of {temporal} for the model at {root} "
            f"(its VAE compresses time by {temporal})"
        )
    return (num_frames - 1) // temporal + 1
