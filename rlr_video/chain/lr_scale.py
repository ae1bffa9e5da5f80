"""How loud each step's likelihood-ratio term is, from the schedule alone.

The LR (score-function) term of step s is ``(eps / std_s) * d mean_s / d output * d output / d theta``
with eps ~ N(0, I): next to the pathwise terms it is scaled by ``|d mean / d output| / std``.
A step whose noise is small while its mean still moves with the model's output has a loud,
high-variance LR term. Schedules with leading spacing and ``steps_offset: 1`` (SD-1.5,
ModelScope/Zeroscope, tiny-shapes) have one: the step that lands on t = 1 (e.g. 41 -> 1).
Covering it with pathwise steps (``estimator.fo_steps: 2``) keeps it out of the LR terms.
"""

from __future__ import annotations

import torch

from rlr_video.chain.transitions import Transition


def lr_term_scale(transition: Transition, step: int) -> float:
    """``|d mean / d model output| / noise std`` of ``step`` (1 = the last step of the chain).

    Taken at zero latents and output, where an x0 clip is inactive; for the Gaussian
    transitions here the mean is affine in the output, so the value holds everywhere else
    the clip is inactive too.
    """
    output = torch.zeros(1, requires_grad=True)
    mean, std = transition.mean_std(output, step, torch.zeros(1))
    if float(std) == 0:
        raise ValueError(f"step {step} is deterministic (noise std 0): it has no likelihood-ratio term")
    (slope,) = torch.autograd.grad(mean.sum(), output)
    return abs(float(slope)) / float(std)


def lr_term_scales(transition: Transition, num_steps: int) -> list[float]:
    """:func:`lr_term_scale` of steps 1 .. ``num_steps`` (index 0 is the last step)."""
    return [lr_term_scale(transition, step) for step in range(1, num_steps + 1)]
