"""Chains from the schedulers diffusers layouts ship with.

Hub repositories ship whatever sampler their authors liked (PNDM for SD-1.5 bases, DPM++
for Zeroscope, UniPC for Wan). The chain needs a Gaussian step with a known std, so the
scheduler's *config* (betas, spacing, offsets, prediction type, shift) is carried over to
the DDIM or flow-matching Euler scheduler whose step ``rlr_video.chain`` reproduces: the
same noise schedule, sampled with the sampler RLR can differentiate.
"""

from __future__ import annotations

from diffusers import CogVideoXDDIMScheduler, DDIMScheduler, FlowMatchEulerDiscreteScheduler

from rlr_video.chain import DDIMTransition, FlowSDETransition


def ddim_transition(scheduler, num_steps: int, eta: float) -> DDIMTransition:
    """DDIM-eta over the scheduler's alphas (any DDPM-family config is converted)."""
    if not isinstance(scheduler, DDIMScheduler):
        scheduler = DDIMScheduler.from_config(scheduler.config)
    return DDIMTransition.from_scheduler(scheduler, num_steps, eta=eta)


def cogvideox_transition(scheduler, num_steps: int, eta: float) -> DDIMTransition:
    """DDIM-eta over CogVideoX's SNR-shifted alphas, as ``CogVideoXDDIMScheduler`` computes them.

    ``scheduler.alphas_cumprod`` already holds the shift ``a / (s + (1 - s) a)`` with
    ``snr_shift_scale`` s and, with ``rescale_betas_zero_snr``, the zero-terminal-SNR
    rescaling. ``CogVideoXDDIMScheduler.step`` ignores ``eta`` and never clips x0 whatever
    ``clip_sample`` says (``DDIMTransition.from_scheduler`` knows); at eta = 0 the transition
    is that step. The multistep ``CogVideoXDPMScheduler``'s config is converted.
    """
    if not isinstance(scheduler, CogVideoXDDIMScheduler):
        scheduler = CogVideoXDDIMScheduler.from_config(scheduler.config)
    return DDIMTransition.from_scheduler(scheduler, num_steps, eta=eta, clips=False)  # its step never clips


def flow_transition(scheduler, num_steps: int, noise_level: float, shift: float | None = None) -> FlowSDETransition:
    """The flow-matching SDE over ``FlowMatchEulerDiscreteScheduler``'s sigmas.

    A flow-matching config of another sampler (Wan's hub repos ship ``UniPCMultistepScheduler``
    with ``use_flow_sigmas`` and ``flow_shift``) becomes an Euler scheduler with that shift;
    ``shift`` overrides the configured one.
    """
    cfg = dict(scheduler.config)
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        configured_shift = cfg.get("shift", 1.0)
    elif cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction":
        configured_shift = cfg.get("flow_shift") or 1.0
        cfg = {"num_train_timesteps": cfg.get("num_train_timesteps", 1000)}
    else:
        raise ValueError(
            f"{type(scheduler).__name__} is no flow-matching scheduler (expected "
            "FlowMatchEulerDiscreteScheduler, or a config with use_flow_sigmas / flow_shift)"
        )
    if cfg.get("use_dynamic_shifting"):
        raise ValueError("resolution-dependent (dynamic) shifting is not supported: pass shift= instead")
    cfg["shift"] = configured_shift if shift is None else float(shift)
    euler = FlowMatchEulerDiscreteScheduler.from_config(cfg)
    return FlowSDETransition.from_scheduler(euler, num_steps, noise_level=noise_level)


def length_shifted_flow_transition(
    scheduler, num_steps: int, noise_level: float, sequence_length: int, shift: float | None = None
) -> FlowSDETransition:
    """The flow-matching SDE over the sigmas ``LTXPipeline`` (diffusers 0.42) samples with.

    The pipeline passes ``sigmas = linspace(1, 1 / N, N)`` and ``mu = calculate_shift(L, ...)``
    to ``FlowMatchEulerDiscreteScheduler.set_timesteps``, L the latent sequence length
    (latent frames x height x width) and the line through ``(base_image_seq_len, base_shift)``
    and ``(max_image_seq_len, max_shift)`` of the scheduler's config. With
    ``use_dynamic_shifting`` (LTX-Video 0.9.0 / 0.9.1) the scheduler shifts the sigmas by
    ``exp(mu)``, then stretches them to end at ``shift_terminal``; without it (0.9.5) mu is
    unused and its static ``shift`` applies. ``shift`` here replaces the length-dependent shift
    by that fixed one (``shift_terminal`` still applies).
    """
    import numpy as np
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        raise ValueError(f"{type(scheduler).__name__}: expected FlowMatchEulerDiscreteScheduler (as LTXPipeline)")
    cfg = dict(scheduler.config)
    if shift is not None:
        cfg.update(use_dynamic_shifting=False, shift=float(shift))
    euler = FlowMatchEulerDiscreteScheduler.from_config(cfg)
    mu = calculate_shift(
        sequence_length,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )
    sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
    return FlowSDETransition.from_scheduler(euler, num_steps, noise_level=noise_level, sigmas=sigmas, mu=mu)
