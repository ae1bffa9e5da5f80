"""Our transitions reproduce diffusers' schedulers step for step, with exact log-densities."""

import math

import pytest
import torch
from diffusers import (
    CogVideoXDDIMScheduler,
    DDIMScheduler,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from tolerances import EPS64, assert_max_abs, assert_rel_close, sum_atol

from rlr_video.backbones.schedulers import cogvideox_transition
from rlr_video.chain import DDIMTransition, DDPMTransition, FlowSDETransition, gaussian_log_prob

SHAPE = (2, 4, 3, 8, 8)  # (B, C, F, H, W)


def _step_atol(transition, step, latents, model_output, noise=None, std=0.0) -> float:
    """Ours and diffusers' step are the same elementwise formula arranged otherwise: a few
    float32 roundings (sum_atol of ~8) at the size of its largest terms, (|x_t| + |model output|)
    times the largest coefficient (1 / sqrt(alpha_bar) for epsilon, where x0 = (x_t - sqrt(1 - a)
    eps) / sqrt(a); at most 1 for v), plus the noise term. The step's beta, 1 - a_t / a_prev, is
    a difference of nearly equal numbers near t = 0: its rounding is 1 / beta times larger
    (measured: 2.9e-6 at DDPM's t = 50, where 1 / beta = 34). An off-by-one alpha or timestep
    moves a step by 1e-2 or more."""
    ddim = getattr(transition, "ddim", transition)  # DDPMTransition wraps a DDIMTransition
    a_t, a_prev = (float(a) for a in ddim._alphas(step))
    coefficient = 1 / math.sqrt(a_t) if ddim.prediction_type == "epsilon" else 1.0
    size = coefficient * (latents.abs() + model_output.abs())
    if noise is not None:
        size = size + abs(float(std)) * noise.abs()
    return sum_atol(8, float(size.max())) * (1 + 1 / (1 - a_t / a_prev))


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(
    "scheduler",
    [
        DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        DDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"),
        DDIMScheduler(clip_sample=True),
        # CogVideoX: SNR-shifted alphas and v-prediction
        CogVideoXDDIMScheduler(prediction_type="v_prediction", snr_shift_scale=3.0, timestep_spacing="trailing"),
    ],
    ids=["sd-eps", "zero-snr-v", "clipped", "cogvideox"],
)
def test_ddim_matches_diffusers_step(scheduler, eta):
    if isinstance(scheduler, CogVideoXDDIMScheduler):  # the CogVideoX family's chain (its step never clips)
        transition = cogvideox_transition(scheduler, 10, eta)
    else:
        transition = DDIMTransition.from_scheduler(scheduler, 10, eta=eta)
    model_output, latents, noise = _inputs()
    for step in range(10, 0, -1):
        t = transition.timestep(step)
        mean, std = transition.mean_std(model_output, step, latents)
        ours = mean + std * noise
        assert float(std) == transition.noise_std(step)  # the same float32 value, read twice
        if isinstance(scheduler, CogVideoXDDIMScheduler):
            # CogVideoX's own DDIM step ignores eta (NOTES.md); compare its deterministic step
            if eta > 0:
                continue
            theirs = scheduler.step(model_output, t, latents).prev_sample
        else:
            out = scheduler.step(model_output, t, latents, eta=eta, variance_noise=noise)
            theirs = out.prev_sample
            atol = _step_atol(transition, step, latents, model_output)
            assert_max_abs(transition.predict_x0(model_output, step, latents), out.pred_original_sample, atol, "x0")
        if not torch.isfinite(theirs).all():
            # diffusers takes sqrt(1 - a_prev - std^2) unclamped. From zero terminal SNR with
            # eta = 1 that is exactly 0, and on some CPUs it rounds to -6e-8: NaN. Ours clamps.
            assert eta == 1.0 and scheduler.config.rescale_betas_zero_snr and step == 10
            assert torch.isfinite(ours).all()
            continue
        atol = _step_atol(transition, step, latents, model_output, noise, std)
        assert_max_abs(ours, theirs, atol, f"DDIM eta {eta}, step {step}")


def test_ddim_eta_zero_is_deterministic_and_last_step_exact():
    transition = DDIMTransition.from_scheduler(DDIMScheduler(set_alpha_to_one=True), 5, eta=0.0)
    assert all(transition.noise_std(t) == 0 for t in range(1, 6))
    eta1 = DDIMTransition.from_scheduler(DDIMScheduler(set_alpha_to_one=True), 5, eta=1.0)
    assert eta1.noise_std(1) == 0.0 and all(eta1.noise_std(t) > 0 for t in range(2, 6))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddpm_matches_diffusers_step(prediction_type):
    scheduler = DDPMScheduler(prediction_type=prediction_type, clip_sample=False)
    transition = DDPMTransition(scheduler, 20)
    model_output, latents, _ = _inputs()
    for step in range(20, 0, -1):
        t = transition.timestep(step)
        out = scheduler.step(model_output, t, latents, generator=torch.Generator().manual_seed(step))
        theirs = out.prev_sample
        atol = _step_atol(transition, step, latents, model_output)
        assert_max_abs(transition.predict_x0(model_output, step, latents), out.pred_original_sample, atol, "x0")
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(step))
        mean, std = transition.mean_std(model_output, step, latents)
        atol = _step_atol(transition, step, latents, model_output, noise, std)
        assert_max_abs(mean + std * noise, theirs, atol, f"DDPM {prediction_type}, step {step}")
    assert transition.noise_std(1) == 0.0


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_sde_at_noise_zero_is_euler(shift):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    transition = FlowSDETransition.from_scheduler(scheduler, 8, noise_level=0.0)
    model_output, latents, noise = _inputs()
    for step in range(8, 0, -1):
        theirs = scheduler.step(model_output, transition.timestep(step), latents).prev_sample
        mean, std = transition.mean_std(model_output, step, latents)
        assert float(std) == 0.0
        # x + (sigma_next - sigma) v: float64 coefficients against diffusers' float32, one
        # product and one sum at the size of |x| + |v| (|sigma_next - sigma| <= 1)
        atol = sum_atol(3, float((latents.abs() + model_output.abs()).max()))
        assert_max_abs(mean + std * noise, theirs, atol, f"Euler, shift {shift}, step {step}")


def test_flow_predict_x0_inverts_the_interpolation():
    """x_sigma = (1 - sigma) x0 + sigma eps with velocity v = eps - x0 gives back x0."""
    transition = FlowSDETransition.from_scheduler(FlowMatchEulerDiscreteScheduler(shift=3.0), 8)
    x0, eps, _ = _inputs()
    for step in range(8, 0, -1):
        sigma = transition._sigmas(step)[0]
        x = (1 - sigma) * x0 + sigma * eps
        # x - sigma v against the x0 that made x: a few float32 roundings at |x0| + |eps|
        atol = sum_atol(6, float((x0.abs() + eps.abs()).max()))
        assert_max_abs(transition.predict_x0(eps - x0, step, x), x0, atol, f"flow x0, step {step}")


def _flow_grpo_step(scheduler, v, x, prev, i, noise_level):
    """Flow-GRPO's ``sde_step_with_logprob`` written their way (float64): mean, std, log-prob
    summed over the non-batch dims. At sigma = 1 only the denominator of g's square root
    takes ``sigma_max = sigmas[1]``, the next level below 1."""
    sigma, sigma_prev = scheduler.sigmas[i].double(), scheduler.sigmas[i + 1].double()
    sigma_max = scheduler.sigmas[1].item()
    dt = sigma_prev - sigma
    std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * noise_level
    mean = x * (1 + std_dev_t**2 / (2 * sigma) * dt) + v * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    std = std_dev_t * torch.sqrt(-1 * dt)
    log_prob = -((prev - mean) ** 2) / (2 * std**2) - torch.log(std) - math.log(math.sqrt(2 * math.pi))
    return mean, std, log_prob.flatten(1).sum(1)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("num_steps", [4, 10, 25])
def test_flow_sde_matches_flow_grpo(shift, num_steps):
    """Mean, std and log-prob equal Flow-GRPO's to 1e-6 relative at every step, the one from
    sigma = 1 included (where g's denominator differs from a plain substitution by ~2%)."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    a = 0.7
    transition = FlowSDETransition.from_scheduler(scheduler, num_steps, noise_level=a)
    assert float(scheduler.sigmas[0]) == 1.0
    v, x, noise = (t.double() for t in _inputs())
    for i, step in enumerate(range(num_steps, 0, -1)):
        mean, std = transition.mean_std(v, step, x)
        prev = mean + std * noise
        their_mean, their_std, their_log_prob = _flow_grpo_step(scheduler, v, x, prev, i, a)
        # Both in float64 from the same float32 sigmas: float64 roundings only, at the size of
        # the mean's terms (|x| + |v|, coefficients near 1) and of the log-density's terms
        assert_max_abs(mean, their_mean, sum_atol(10, float((x.abs() + v.abs()).max()), EPS64), f"mean, step {step}")
        assert math.isclose(float(std), float(their_std), rel_tol=sum_atol(8, 1.0, EPS64)), f"step {step}"
        log_prob = transition.log_prob(prev, mean, std)
        terms = (noise**2 / 2 + abs(math.log(float(std))) + 1).flatten(1).sum(1)  # |each term| summed
        atol = sum_atol(noise[0].numel() + 4, float(terms.max()), EPS64)
        assert_max_abs(log_prob, their_log_prob, atol, f"log-prob, step {step}")


def test_log_prob_is_the_summed_gaussian_density():
    sample, mean, _ = _inputs()
    std = torch.tensor(0.3)
    expected = torch.distributions.Normal(mean, std).log_prob(sample).flatten(1).sum(1)
    # float32 sums of 768 terms per video in another order (sum_atol, at the terms' summed size;
    # they are nearly all negative, so about |the sum|); leaving out the constant is 8% off
    n = sample[0].numel()
    assert_rel_close(gaussian_log_prob(sample, mean, std), expected, sum_atol(n + 4, 1.0), "Gaussian log-density")
    with pytest.raises(ValueError, match="deterministic"):
        gaussian_log_prob(sample, mean, torch.tensor(0.0))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="prediction_type='x'"):
        DDIMTransition(torch.ones(10), torch.arange(5), prediction_type="x")
    transition = DDIMTransition.from_scheduler(DDIMScheduler(), 5)
    with pytest.raises(ValueError, match="step 6"):
        transition.timestep(6)


def test_lr_term_scale_is_the_closed_form_and_flags_the_step_onto_t_1():
    from rlr_video.chain.lr_scale import lr_term_scale, lr_term_scales

    sd = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, set_alpha_to_one=False
    )
    transition = DDIMTransition.from_scheduler(sd, 25, eta=1.0)
    step = 2  # t = 41 -> 1
    a_t, a_prev = (float(sd.alphas_cumprod[t]) for t in (41, 1))
    std = math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    slope = -math.sqrt(a_prev * (1 - a_t) / a_t) + math.sqrt(1 - a_prev - std**2)
    # the slope is a difference of two nearly equal square roots: float32 alphas' rounding
    # (ours) against float64 (here), amplified by (|first| + |second|) / |slope|
    terms = math.sqrt(a_prev * (1 - a_t) / a_t) + math.sqrt(1 - a_prev - std**2)
    rel = sum_atol(10, terms / abs(slope))
    assert lr_term_scale(transition, step) == pytest.approx(abs(slope) / std, rel=rel)
    scales = lr_term_scales(transition, 25)
    assert max(range(25), key=scales.__getitem__) == step - 1
    assert scales[step - 1] > 5 * sorted(scales)[12]  # far above the median step
    with pytest.raises(ValueError, match="step 2 is deterministic"):
        lr_term_scale(DDIMTransition.from_scheduler(sd, 25, eta=0.0), 2)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_forward_process_and_deterministic_twins_match_diffusers(shift):
    """``add_noise`` is the schedulers' forward process (DDIM's ``add_noise``, the flow scheduler's
    ``scale_noise``) at each step's timestep; ``deterministic()`` is the same chain at eta 0 / noise
    level 0 (DDIM's eta-0 step, the Euler step); x0 unclipped with ``clip=False``."""
    x0, noise, output = _inputs(3)
    ddim_scheduler = DDIMScheduler(prediction_type="v_prediction", clip_sample=True, clip_sample_range=0.5)
    ddim = DDIMTransition.from_scheduler(ddim_scheduler, 6, eta=1.0)
    flow_scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    flow = FlowSDETransition.from_scheduler(flow_scheduler, 6, noise_level=0.7)
    quiet_ddim, quiet_flow = ddim.deterministic(), flow.deterministic()
    assert quiet_ddim.eta == 0.0 and quiet_flow.noise_level == 0.0
    # c0 x0 + c1 eps with coefficients <= 1: each side rounds its coefficients (float32 or float64,
    # 1 - sigma too), two products and a sum, at most 5 roundings at the size |x0| + |eps|
    # (sum_atol); a neighbouring step's coefficients move it by 1e-2 or more.
    noisy = sum_atol(6, float((x0.abs() + noise.abs()).max()))
    for step in range(6, 0, -1):
        t = ddim.timestep(step)
        theirs = ddim_scheduler.add_noise(x0, noise, t[None])
        assert_max_abs(ddim.add_noise(x0, noise, step), theirs, noisy, f"DDIM add_noise, step {step}")
        ft = flow.timestep(step)
        expected = flow_scheduler.scale_noise(x0, ft[None], noise)
        assert_max_abs(flow.add_noise(x0, noise, step), expected, noisy, f"flow add_noise, step {step}")
        ours, _ = quiet_ddim.mean_std(output, step, x0)
        theirs = ddim_scheduler.step(output, t, x0, eta=0.0).prev_sample
        # the DDIM step arranged otherwise, as in test_ddim_matches_diffusers_step (_step_atol)
        assert_max_abs(ours, theirs, _step_atol(quiet_ddim, step, x0, output), f"DDIM eta 0, step {step}")
        mean, std = quiet_flow.mean_std(output, step, x0)
        assert float(std) == 0.0
        # x + (sigma_next - sigma) v, as in test_flow_sde_at_noise_zero_is_euler
        euler = sum_atol(3, float((x0.abs() + output.abs()).max()))
        assert_max_abs(mean, flow_scheduler.step(output, ft, x0).prev_sample, euler, f"Euler twin, step {step}")
    unclipped = ddim.predict_x0(output * 4, 3, x0, clip=False)
    assert unclipped.abs().max() > 0.5 and ddim.predict_x0(output * 4, 3, x0).abs().max() <= 0.5
