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

from rlr_video.backbones.schedulers import cogvideox_transition
from rlr_video.chain import DDIMTransition, DDPMTransition, FlowSDETransition, gaussian_log_prob

SHAPE = (2, 4, 3, 8, 8)  # (B, C, F, H, W)


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
        assert math.isclose(float(std), transition.noise_std(step), rel_tol=1e-6)
        if isinstance(scheduler, CogVideoXDDIMScheduler):
            # CogVideoX's own DDIM step ignores eta (NOTES.md); compare its deterministic step
            if eta > 0:
                continue
            theirs = scheduler.step(model_output, t, latents).prev_sample
        else:
            out = scheduler.step(model_output, t, latents, eta=eta, variance_noise=noise)
            theirs = out.prev_sample
            assert (transition.predict_x0(model_output, step, latents) - out.pred_original_sample).abs().max() <= 1e-5
        if not torch.isfinite(theirs).all():
            # diffusers takes sqrt(1 - a_prev - std^2) unclamped. From zero terminal SNR with
            # eta = 1 that is exactly 0, and on some CPUs it rounds to -6e-8: NaN. Ours clamps.
            assert eta == 1.0 and scheduler.config.rescale_betas_zero_snr and step == 10
            assert torch.isfinite(ours).all()
            continue
        assert (ours - theirs).abs().max() <= 1e-5, f"step {step}"


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
        assert (transition.predict_x0(model_output, step, latents) - out.pred_original_sample).abs().max() <= 1e-5
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(step))
        mean, std = transition.mean_std(model_output, step, latents)
        assert (mean + std * noise - theirs).abs().max() <= 1e-5, f"step {step}"
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
        assert (mean + std * noise - theirs).abs().max() <= 1e-5, f"step {step}"


def test_flow_predict_x0_inverts_the_interpolation():
    """x_sigma = (1 - sigma) x0 + sigma eps with velocity v = eps - x0 gives back x0."""
    transition = FlowSDETransition.from_scheduler(FlowMatchEulerDiscreteScheduler(shift=3.0), 8)
    x0, eps, _ = _inputs()
    for step in range(8, 0, -1):
        sigma = transition._sigmas(step)[0]
        x = (1 - sigma) * x0 + sigma * eps
        assert (transition.predict_x0(eps - x0, step, x) - x0).abs().max() <= 1e-5


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
        assert ((mean - their_mean).abs().max() / their_mean.abs().max()) <= 1e-6, f"step {step}"
        assert math.isclose(float(std), float(their_std), rel_tol=1e-6), f"step {step}"
        log_prob = transition.log_prob(prev, mean, std)
        assert torch.allclose(log_prob, their_log_prob, rtol=1e-6, atol=0), f"step {step}"


def test_log_prob_is_the_summed_gaussian_density():
    sample, mean, _ = _inputs()
    std = torch.tensor(0.3)
    expected = torch.distributions.Normal(mean, std).log_prob(sample).flatten(1).sum(1)
    assert torch.allclose(gaussian_log_prob(sample, mean, std), expected, rtol=1e-5)
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
    assert lr_term_scale(transition, step) == pytest.approx(abs(slope) / std, rel=1e-4)
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
    for step in range(6, 0, -1):
        t = ddim.timestep(step)
        assert torch.allclose(ddim.add_noise(x0, noise, step), ddim_scheduler.add_noise(x0, noise, t[None]), atol=1e-6)
        ft = flow.timestep(step)
        expected = flow_scheduler.scale_noise(x0, ft[None], noise)
        assert torch.allclose(flow.add_noise(x0, noise, step), expected, atol=1e-6)
        ours, _ = quiet_ddim.mean_std(output, step, x0)
        theirs = ddim_scheduler.step(output, t, x0, eta=0.0).prev_sample
        assert (ours - theirs).abs().max() <= 1e-5
        mean, std = quiet_flow.mean_std(output, step, x0)
        assert float(std) == 0.0
        assert (mean - flow_scheduler.step(output, ft, x0).prev_sample).abs().max() <= 1e-5
    unclipped = ddim.predict_x0(output * 4, 3, x0, clip=False)
    assert unclipped.abs().max() > 0.5 and ddim.predict_x0(output * 4, 3, x0).abs().max() <= 0.5
